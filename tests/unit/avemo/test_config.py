"""params.yaml: the shipped file is valid and the one home of every value; typos and bad values are
refused with the key named."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from avemo.config import ConfigError, Params, PreprocessParams, TrainParams, VadParams, load_params
from avemo.provenance import REPO_ROOT
from models.registry import MODELS, InputShapes, build_model

REPO = REPO_ROOT


def test_shipped_params_load_and_every_system_builds() -> None:
    params = load_params(REPO / "params.yaml")
    assert params.preprocess.segment.duration_s == pytest.approx(0.655)
    assert params.preprocess.segment.stride_frames == 34
    assert set(params.train.systems) <= set(MODELS)
    p = params.preprocess
    shapes = InputShapes(  # what preprocessing with these params writes; 304: the FER2013 embedding's width
        mel_bands=p.audio_features.n_mels,
        segment_frames=p.segment.frames,
        faces_per_segment=p.faces.frames_per_segment,
        crop_size=p.faces.crop_size,
        embedding_dim=304,
    )
    widths = {"egemaps": 88, "compare": 6373, "whisper": 1024}  # any widths: the shapes come from the features
    for system in params.models:
        choice = params.system(system)
        if choice.frontend in (None, "logmel", "linear"):
            build_model(system, 4, shapes, **choice.hyperparameters)
            continue
        blocks = tuple(widths[name] for name in choice.frontend.split("+"))
        vectors = dataclasses.replace(
            shapes,
            audio_frontend=choice.frontend,
            audio_dim=sum(blocks),
            audio_blocks=blocks if len(blocks) > 1 else None,
        )
        build_model(system, 4, vectors, **choice.hyperparameters)


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


def test_every_value_comes_from_params_yaml_and_a_partial_file_keeps_the_others(tmp_path: Path) -> None:
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())
    assert Params().model_dump(mode="json")["preprocess"]["vad"] == shipped["preprocess"]["vad"]
    assert VadParams(aggressiveness=3).frame_ms == shipped["preprocess"]["vad"]["frame_ms"]
    path = tmp_path / "params.yaml"
    path.write_text("preprocess:\n  vad:\n    aggressiveness: 3\ntrain:\n  epochs: 2\n")
    params = load_params(path)
    assert params.preprocess.vad.aggressiveness == 3 and params.train.epochs == 2
    assert params.preprocess.vad.smoothing_frames == shipped["preprocess"]["vad"]["smoothing_frames"]
    assert params.preprocess.segment == PreprocessParams().segment and params.train.lr == TrainParams().lr


def test_a_partial_models_section_keeps_the_other_systems_and_keys(tmp_path: Path) -> None:
    shipped = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    path = tmp_path / "params.yaml"
    path.write_text("models:\n  avef:\n    fc_dim: 128\n  gfbp:\n    O: 64\n")
    models = load_params(path).models
    assert models["avef"] == {**shipped["avef"], "fc_dim": 128} and models["gfbp"] == {"O": 64}
    assert models.keys() == shipped.keys()


def test_the_renamed_optimizer_says_its_new_name() -> None:
    with pytest.raises(ValueError, match="optimizer 'adam' is now called 'adamw'"):
        TrainParams(optimizer="adam")
    assert TrainParams(optimizer="adamw").optimizer == "adamw"
