"""params.yaml: the shipped file is valid, typos and bad values are refused with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest

from avemo.config import ConfigError, Params, load_params
from models.registry import MODELS, InputShapes, build_model

REPO = Path(__file__).resolve().parents[1]


def test_shipped_params_load_and_every_system_builds() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.preprocess.segment.duration_s == pytest.approx(0.655)
    assert params.preprocess.segment.stride_frames == 34
    assert set(params.train.systems) <= set(MODELS)
    p = params.preprocess
    shapes = InputShapes(  # what preprocessing with these params writes; 304: the FER2013 embedding's width
        mel_bands=p.audio_features.n_mels, segment_frames=p.segment.frames,
        faces_per_segment=p.faces.frames_per_segment, crop_size=p.faces.crop_size, embedding_dim=304,
    )  # fmt: skip
    for system in params.train.systems:
        build_model(system, 4, shapes, **params.models.get(system, {}))


def test_missing_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load_params(tmp_path / "absent.yaml") == Params()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("preprocess:\n  vad:\n    frame_ms: 25\n", "frame_ms"),
        ("preprocess:\n  vad:\n    smoothing_frames: 4\n", "odd"),
        ("preprocess:\n  segmnt: {}\n", "segmnt"),
        ("train:\n  split:\n    scheme: random\n", "scheme"),
        ("preprocess: [unclosed\n", "params.yaml"),
    ],
)
def test_bad_settings_are_refused_naming_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_params(path)
