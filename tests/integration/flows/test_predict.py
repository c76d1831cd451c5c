"""Prediction on media files: the same numbers as evaluation, the timeline, audio-only files, windows,
model folders, and the refusals (video model on audio, other feature settings, no stored settings).

Models are trained here, briefly, on the session's sample features; the predictions are compared with
what the evaluation path (features on disk -> trained_posteriors) gives for the same clips, never with
numbers written into the test.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from avemo.cli import app
from avemo.config import PreprocessParams, TrainParams
from avemo.ffmpeg import ffmpeg_exe
from avemo.parquet_io import read_provenance
from flows.predict import predict_files
from models.registry import get_spec
from tasks.audio.segment import count_frames, samples_per
from tasks.learning.checkpoints import load_trained, save_trained
from tasks.learning.features import load_features, task_labels
from tasks.learning.fit import fit
from tasks.learning.inference import Predictions, trained_posteriors
from tasks.learning.trained import TrainSettings
from tasks.predict.compatibility import PredictError, check_feature_params, check_media, load_predictor
from tasks.predict.documents import csv_columns
from tasks.predict.speakers import predict_group
from tasks.predict.windows import FilePrediction, Window, plan_windows

CLIP = "1001_DFA_ANG_XX"  # a sample clip: in the training features, so evaluation has predicted it too
SMALL = {
    "gfbp": {"audio_channels": (8, 16, 16, 16, 16), "O": 16, "K": 2},
    "audio": {"audio_channels": (8, 16, 16, 16, 16)},
    "avef_audio": {"width": 0.125, "fc_dim": 32},
}


def _train(features_dir: Path, system: str, path: Path, seed: int = 0, speakers: tuple[str, ...] | None = None) -> Path:
    """A few epochs on the sample clips (of ``speakers``: speaker-normalised), saved as the train flow
    saves it (with the feature settings)."""
    spec = get_spec(system)
    features = load_features(features_dir, spec.needs, spec.input_kind)
    labels = task_labels(features, "emotion")
    train = TrainParams(epochs=2, batch_size=8, speaker_normalisation=speakers is not None)
    settings = TrainSettings.of(train, seed=seed)
    clips = [c for c, s in zip(features.clip_ids, features.speakers, strict=True) if speakers is None or s in speakers]
    trained = fit(system, features, labels, clips, [], settings, hyperparameters=SMALL[system])
    stored = read_provenance(features_dir / "clips.parquet")["params"]
    trained.extra.update({"system": system, "fold": "all", "feature_params": stored})
    save_trained(path, trained)
    return path


@pytest.fixture(scope="module")
def models(sample_features: Path, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict_models")
    (root / "audio").mkdir()
    return {
        "gfbp": _train(sample_features, "gfbp", root / "gfbp.pt"),
        "audio": _train(sample_features, "audio", root / "audio" / "fold-all-seed0.pt"),
        "audio_seed1": _train(sample_features, "audio", root / "audio" / "fold-all-seed1.pt", seed=1),
        "avef_audio": _train(sample_features, "avef_audio", root / "avef_audio.pt"),
    }


def _media(sample_features: Path, clip: str = CLIP) -> Path:
    clips = pq.read_table(sample_features / "clips.parquet", columns=["clip_id", "path"]).to_pylist()
    corpus = Path(read_provenance(sample_features / "clips.parquet")["corpus_dir"])
    return corpus / next(row["path"] for row in clips if row["clip_id"] == clip)


@pytest.fixture(scope="module")
def wav(sample_features: Path, tmp_path_factory) -> Path:
    """The sample clip's audio alone, as float PCM: the same samples, no video stream."""
    out = tmp_path_factory.mktemp("audio_only") / f"{CLIP}.wav"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-loglevel",
            "error",
            "-i",
            str(_media(sample_features)),
            "-vn",
            "-c:a",
            "pcm_f32le",
            str(out),
        ],
        check=True,
    )
    return out


def _predict(predictor, file: Path, window_s: float = 60.0) -> FilePrediction:
    """One file of an unknown speaker, as `avemo predict FILE` predicts it."""
    with tempfile.TemporaryDirectory() as tmp:
        (result,) = predict_group(
            predictor,
            [(file, check_media(predictor, file))],
            None,
            Path(tmp),
            window_s=window_s,
            batch_size=32,
            on_window=lambda: None,
        )
    assert isinstance(result, FilePrediction), result
    return result


def _cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch):
    """`avemo ARGS` run in ``cwd``, away from the repository's params.yaml (its defaults apply)."""
    monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, args)


def _evaluation(checkpoint: Path, features_dir: Path) -> Predictions:
    """The clip's predictions the way `avemo evaluate` computes them, from the features on disk."""
    trained = load_trained(checkpoint)
    spec = get_spec(trained.model_name)
    features = load_features(features_dir, spec.needs, spec.input_kind)
    return trained_posteriors(trained, features, task_labels(features, "emotion"), [CLIP])


def test_prediction_is_the_evaluation_path_with_a_timeline(sample_features: Path, models: dict[str, Path]) -> None:
    predictor = load_predictor(models["gfbp"])
    result = _predict(predictor, _media(sample_features))
    assert isinstance(result, FilePrediction)
    evaluation = _evaluation(models["gfbp"], sample_features)
    np.testing.assert_allclose(result.probabilities, evaluation.clips.probabilities[0], atol=1e-5)
    assert result.emotion == predictor.classes[int(np.argmax(result.probabilities))]

    # The timeline is the clip's kept segments, as preprocess found them, each scored on its own span.
    segments = pq.read_table(sample_features / "segments.parquet")
    segments = segments.filter(pc.equal(segments["clip_id"], CLIP)).to_pydict()
    assert [r.t_begin for r in result.segments] == pytest.approx(segments["t_begin"])
    assert [r.t_end for r in result.segments] == pytest.approx(segments["t_end"])
    assert [r.face_found for r in result.segments] == [n < 16 for n in segments["n_no_face"]]
    assert all(0 <= r.t_begin < r.t_end <= result.duration_s for r in result.segments)
    for row in result.segments:
        assert sum(row.probabilities) == pytest.approx(1.0, abs=1e-6)
        assert row.emotion == predictor.classes[int(np.argmax(row.probabilities))]
    assert len({r.probabilities for r in result.segments}) > 1  # spans are scored on their own, not copied


def test_a_segment_models_timeline_is_its_segment_posteriors(sample_features: Path, models: dict[str, Path]) -> None:
    result = _predict(load_predictor(models["avef_audio"]), _media(sample_features))
    evaluation = _evaluation(models["avef_audio"], sample_features)
    np.testing.assert_allclose(result.probabilities, evaluation.clips.probabilities[0], atol=1e-5)
    order = np.argsort(evaluation.segments.segments)
    np.testing.assert_allclose(
        [r.probabilities for r in result.segments], evaluation.segments.probabilities[order], atol=1e-5
    )


def test_cli_json_and_csv(
    sample_features: Path, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    media = _media(sample_features)
    cli = _cli(["predict", str(media), "--model", str(models["audio"])], tmp_path, monkeypatch)
    assert cli.exit_code == 0, cli.output
    document = json.loads(cli.stdout)
    (entry,) = document["files"]
    classes = document["model"]["classes"]
    assert document["model"]["system"] == "audio" and entry["file"] == str(media)
    assert list(entry["probabilities"]) == classes
    assert sum(entry["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert entry["emotion"] == max(entry["probabilities"], key=entry["probabilities"].get)
    assert entry["segments"] and all(s["face_found"] is None for s in entry["segments"])  # audio model: not searched

    out = tmp_path / "out" / "predictions.csv"
    cli = _cli(
        ["predict", str(media), "--model", str(models["audio"]), "--format", "csv", "--out", str(out)],
        tmp_path,
        monkeypatch,
    )
    assert cli.exit_code == 0, cli.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert list(rows[0]) == csv_columns(classes)
    assert [r["level"] for r in rows] == ["clip"] + ["segment"] * len(entry["segments"])
    assert [r["emotion"] for r in rows] == [entry["emotion"]] + [s["emotion"] for s in entry["segments"]]
    for row in rows:
        assert sum(float(row[f"p_{c}"]) for c in classes) == pytest.approx(1.0, abs=1e-3)
        assert 0.0 <= float(row["t_begin"]) < float(row["t_end"]) <= entry["duration_s"]


def test_audio_only_file_with_an_audio_model(sample_features: Path, models: dict[str, Path], wav: Path) -> None:
    predictor = load_predictor(models["audio"])
    from_wav = _predict(predictor, wav)
    from_video = _predict(predictor, _media(sample_features))
    assert not from_wav.has_video and all(r.face_found is None for r in from_wav.segments)
    # The same audio samples give the same segments and posteriors, whatever the container.
    assert [r.t_begin for r in from_wav.segments] == [r.t_begin for r in from_video.segments]
    np.testing.assert_allclose(from_wav.probabilities, from_video.probabilities, atol=1e-4)


def test_a_video_model_refuses_an_audio_only_file(
    models: dict[str, Path], wav: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(PredictError, match=f"{wav.name} has no video stream.*needs audio and video.*data/models/audio"):
        check_media(load_predictor(models["gfbp"]), wav)
    cli = _cli(["predict", str(wav), "--model", str(models["gfbp"])], tmp_path, monkeypatch)
    assert cli.exit_code == 1 and "has no video stream" in cli.stderr and cli.stdout == ""


def test_other_feature_settings_are_refused(
    sample_features: Path, models: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    predictor = load_predictor(models["gfbp"])
    check_feature_params(predictor, predictor.params, Path("same.yaml"))  # the checkpoint's own: accepted
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump({"preprocess": {"faces": {"crop_size": 64}, "vad": {"aggressiveness": 3}}}))
    cli = _cli(
        ["predict", str(_media(sample_features)), "-m", str(models["gfbp"]), "--params", str(params_file)],
        tmp_path,
        monkeypatch,
    )
    assert cli.exit_code == 1
    message = " ".join(cli.stderr.split())  # the terminal wraps long lines
    for expected in (
        str(models["gfbp"]),
        str(params_file),
        "faces.crop_size: 48 in the checkpoint, 64",
        "vad.aggressiveness",
        "drop --params",
    ):
        assert expected in message

    # A checkpoint without the settings its features were made with cannot be reproduced: refused.
    trained = load_trained(models["audio"])
    del trained.extra["feature_params"]
    bare = tmp_path / "bare.pt"
    save_trained(bare, trained)
    with pytest.raises(PredictError, match="bare.pt does not record the feature settings.*re-train"):
        load_predictor(bare)


def test_a_model_folder_averages_its_checkpoints(sample_features: Path, models: dict[str, Path]) -> None:
    media = _media(sample_features)
    folder = _predict(load_predictor(models["audio"].parent), media)
    singles = [_predict(load_predictor(models[name]), media) for name in ("audio", "audio_seed1")]
    assert singles[0].probabilities != pytest.approx(singles[1].probabilities)  # two different models
    np.testing.assert_allclose(folder.probabilities, np.mean([s.probabilities for s in singles], axis=0), atol=1e-6)
    np.testing.assert_allclose(
        [r.probabilities for r in folder.segments],
        np.mean([[r.probabilities for r in s.segments] for s in singles], axis=0),
        atol=1e-6,
    )


def test_windows_hold_each_segment_of_the_file_once() -> None:
    params = PreprocessParams()
    rate, seg = params.audio.sample_rate, params.segment
    windows = plan_windows(600.0, params, 60.0)
    step = windows[1].start_s - windows[0].start_s
    assert step == pytest.approx(59.16)  # the largest multiple of 1.02 s, the 340 ms stride's and 30 ms VAD frame's
    assert windows[-1].start_s < 600.0 <= windows[-1].start_s + step
    # A window's file holds exactly the segments starting in it: step / stride of them, not one more.
    frames = count_frames(
        round(windows[0].length_s * rate), samples_per(seg.window_ms, rate), samples_per(seg.hop_ms, rate)
    )
    assert count_frames(frames, seg.frames, seg.stride_frames) == round(step / (seg.stride_frames * seg.hop_ms / 1000))
    assert plan_windows(59.0, params, 60.0) == [Window(0.0, None)]  # a file within one window: processed whole


def test_a_windowed_file_has_the_whole_files_segments(sample_features: Path, models: dict[str, Path]) -> None:
    predictor = load_predictor(models["audio"])
    whole = _predict(predictor, _media(sample_features))
    windowed = _predict(predictor, _media(sample_features), window_s=1.0)
    assert windowed.windows > 1 and whole.windows == 1
    assert [r.t_begin for r in windowed.segments] == pytest.approx([r.t_begin for r in whole.segments])
    assert [r.segment for r in windowed.segments] == list(range(len(whole.segments)))


HELD_OUT = "1003"  # the sample speaker the speaker-normalised models never saw


@pytest.fixture(scope="module")
def normalised(sample_features: Path, tmp_path_factory) -> dict[str, Path]:
    """Speaker-normalised models of the other two sample speakers."""
    root = tmp_path_factory.mktemp("normalised_models")
    return {
        system: _train(sample_features, system, root / f"{system}.pt", speakers=("1001", "1002"))
        for system in ("audio", "avef_audio")
    }


def _held_out_clips(sample_features: Path) -> list[str]:
    clips = pq.read_table(sample_features / "clips.parquet", columns=["clip_id", "speaker"]).to_pylist()
    return [row["clip_id"] for row in clips if row["speaker"] == HELD_OUT]


def _evaluated_clips(checkpoint: Path, features_dir: Path, clips: list[str]) -> dict[str, np.ndarray]:
    """Evaluation's posteriors of ``clips``: their speaker standardised over all of them."""
    trained = load_trained(checkpoint)
    spec = get_spec(trained.model_name)
    features = load_features(features_dir, spec.needs, spec.input_kind)
    scored = trained_posteriors(trained, features, task_labels(features, "emotion"), clips).clips
    return dict(zip(scored.clip_ids, scored.probabilities, strict=True))


@pytest.mark.parametrize("system", ["audio", "avef_audio"])
def test_a_held_out_speakers_files_get_evaluations_posteriors(
    sample_features: Path, normalised: dict[str, Path], system: str, caplog: pytest.LogCaptureFixture
) -> None:
    clips = _held_out_clips(sample_features)
    evaluation = _evaluated_clips(normalised[system], sample_features, clips)
    files = [_media(sample_features, clip) for clip in clips]
    run = predict_files(
        files,
        normalised[system],
        device="cpu",
        window_s=60.0,
        batch_size=32,
        logger=logging.getLogger("t"),
        speaker=HELD_OUT,
    )
    assert not run.failures and not caplog.records  # a known speaker with several files: nothing to warn about
    for clip, result in zip(clips, run.results, strict=True):
        assert isinstance(result, FilePrediction)
        assert (result.speaker, result.standardisation) == (HELD_OUT, "speaker")
        np.testing.assert_allclose(result.probabilities, evaluation[clip], atol=1e-5)

    # Each file alone, speaker unknown: a typical training speaker's statistics, which the run says.
    alone = predict_files(
        files[:1], normalised[system], device="cpu", window_s=60.0, batch_size=32, logger=logging.getLogger("t")
    )
    (result,) = alone.results
    assert isinstance(result, FilePrediction) and result.standardisation == "typical_speaker"
    assert "1 file(s) have no speaker: they use a typical training speaker's statistics" in caplog.text
    trained = load_trained(normalised[system])
    typical = dataclasses.replace(trained, standardization=trained.speaker_fallback)
    spec = get_spec(trained.model_name)
    features = load_features(sample_features, spec.needs, spec.input_kind)
    expected = trained_posteriors(typical, features, task_labels(features, "emotion"), clips[:1]).clips
    np.testing.assert_allclose(result.probabilities, expected.probabilities[0], atol=1e-5)
    # other statistics, other numbers: beyond the tolerance that tells the two apart above
    assert np.abs(np.subtract(result.probabilities, evaluation[clips[0]])).max() > 1e-4


def test_speakers_from_a_csv_or_the_manifest_through_the_cli(
    sample_features: Path, normalised: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clips = _held_out_clips(sample_features)
    evaluation = _evaluated_clips(normalised["audio"], sample_features, clips)
    table = tmp_path / "speakers.csv"
    table.write_text("path,speaker\n" + "".join(f"{_media(sample_features, c)},{HELD_OUT}\n" for c in clips))
    files = [str(_media(sample_features, c)) for c in clips]
    by_csv = _cli(["predict", *files, "-m", str(normalised["audio"]), "--speakers", str(table)], tmp_path, monkeypatch)
    assert by_csv.exit_code == 0, by_csv.output
    # No files named: every file of the manifest, each speaker over its own files.
    manifest = sample_features.parent / "manifest.parquet"
    by_manifest = _cli(["predict", "-m", str(normalised["audio"]), "--speakers", str(manifest)], tmp_path, monkeypatch)
    assert by_manifest.exit_code == 0, by_manifest.output
    csv_files = json.loads(by_csv.stdout)["files"]
    manifest_files = {entry["file"]: entry for entry in json.loads(by_manifest.stdout)["files"]}
    assert len(manifest_files) == 12 and {e["speaker"] for e in manifest_files.values()} == {"1001", "1002", "1003"}
    for clip, entry in zip(clips, csv_files, strict=True):
        assert entry["speaker"] == HELD_OUT and entry["standardisation"] == "speaker"
        assert manifest_files[str(Path(entry["file"]).resolve())]["probabilities"] == entry["probabilities"]
        # the JSON keeps 4 decimals
        np.testing.assert_allclose(list(entry["probabilities"].values()), evaluation[clip], atol=6e-5)

    missing = _cli(
        ["predict", files[0], "-m", str(normalised["audio"]), "--speakers", str(tmp_path / "x.csv")],
        tmp_path,
        monkeypatch,
    )
    assert missing.exit_code == 1 and "speaker table" in missing.stderr and "not found" in missing.stderr


def test_a_checkpoint_without_a_typical_speaker_uses_the_files_own_and_says_so(
    sample_features: Path, normalised: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    trained = load_trained(normalised["audio"])
    trained.speaker_fallback = None  # as avemo wrote checkpoints before it stored one
    old = tmp_path / "old.pt"
    save_trained(old, trained)
    clip = _held_out_clips(sample_features)[0]
    run = predict_files(
        [_media(sample_features, clip)], old, device="cpu", window_s=60.0, batch_size=32, logger=logging.getLogger("t")
    )
    (result,) = run.results
    assert isinstance(result, FilePrediction) and result.standardisation == "own_file"
    assert "each file's own statistics (its checkpoint predates stored training-speaker statistics)" in caplog.text
    # the file alone as its speaker: what evaluation gives a speaker with one clip
    np.testing.assert_allclose(result.probabilities, _evaluated_clips(old, sample_features, [clip])[clip], atol=1e-5)
