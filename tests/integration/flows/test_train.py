"""The train flow under Prefect's test harness, on features of the built-in sample corpus."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from avemo.cli import app
from avemo.config import TrainParams
from flows.train import run_train
from models.registry import get_spec
from tasks.learning.checkpoints import load_checkpoint
from tasks.learning.features import load_features, task_labels
from tasks.learning.fit import fit
from tasks.learning.inference import trained_posteriors
from tasks.learning.trained import TrainSettings


def _params(features: Path, **updates) -> TrainParams:
    return TrainParams(features_dir=features, epochs=3, patience=2, batch_size=8).model_copy(update=updates)


# Narrow networks: the test proves the path (folds, checkpoints, reports), not the paper's capacity.
SMALL = {
    "audio": {"audio_channels": (16, 32, 48, 48, 32)},
    "avef": {"width": 0.125, "fc_dim": 64, "dbn_hidden": (64, 32)},
}


@pytest.mark.parametrize("system", ["audio", "avef"])
def test_train_speaker_independently(sample_features: Path, tmp_path: Path, system: str) -> None:
    models = tmp_path / "models"
    summaries = run_train(system, _params(sample_features), SMALL[system], models)
    assert [s.fold for s in summaries] == ["loso-1001", "loso-1002", "loso-1003"]

    folds = pq.read_table(models / "folds.parquet").to_pylist()
    for fold in {r["fold"] for r in folds}:
        roles = {}
        for row in (r for r in folds if r["fold"] == fold):
            roles.setdefault(row["role"], set()).add(row["speaker"])
        assert roles["test"] == {fold.removeprefix("loso-")}
        assert roles["test"].isdisjoint(roles["train"] | roles.get("validation", set()))
        assert roles["train"].isdisjoint(roles.get("validation", set()))

    state, meta = load_checkpoint(models / "fold-loso-1001-seed0.pt")  # weights_only=True inside
    assert meta["model"] == system and meta["classes"] == ["anger", "sadness"] and state


def test_a_model_needing_video_refuses_audio_only_features(sample_features: Path, tmp_path: Path) -> None:
    audio_only = tmp_path / "features"  # a features folder without frames.parquet: no video
    audio_only.mkdir()
    for name in ("clips", "segments", "failures"):
        (audio_only / f"{name}.parquet").write_bytes((sample_features / f"{name}.parquet").read_bytes())
    result = CliRunner().invoke(
        app, ["train", "--system", "gfbp", "--features", str(audio_only), "--params", "none.yaml"]
    )
    assert result.exit_code == 1
    assert "needs video features" in result.output or "has no video" in result.output


def test_frame_count_and_crop_size_travel_from_the_features_into_the_models(prefect_harness, tmp_path: Path) -> None:
    """Preprocessed with 20 face frames per segment and 40 px crops, AVEF and G-FBP train on the features
    with no second setting of either: the models are built for the sizes the features hold."""
    from avemo import schemas
    from avemo.config import FaceParams, PreprocessParams, SplitParams
    from avemo.parquet_io import write_table
    from avemo.provenance import provenance
    from flows.preprocess import run_preprocess
    from tasks.corpora.manifest import build_manifest, manifest_table
    from tasks.sample import write_sample_corpus

    write_sample_corpus(tmp_path / "corpus", [1001, 1002], ["ANG", "SAD"], seed=0, sentences=("DFA",))
    rows, _ = build_manifest(tmp_path / "corpus", "cremad", workers=2)
    manifest = tmp_path / "manifest.parquet"
    write_table(
        manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(tmp_path / "corpus"))
    )
    faces = FaceParams(frames_per_segment=20, crop_size=40)
    run_preprocess(manifest, tmp_path / "features", PreprocessParams(cache_dir=tmp_path / "cache", faces=faces))

    params = _params(tmp_path / "features", epochs=1, batch_size=4, split=SplitParams(val_speakers=0))
    small = {"avef": SMALL["avef"], "gfbp": {"audio_channels": (8, 16, 16, 16, 16), "O": 16}}
    for system, expected in (("avef", {"faces_per_segment": 20, "crop_size": 40}), ("gfbp", {"embedding_dim": 304})):
        run_train(system, params, small[system], tmp_path / system)
        _, meta = load_checkpoint(tmp_path / system / "fold-loso-1001-seed0.pt")
        assert {key: meta["input_shapes"][key] for key in expected} == expected
        assert not set(meta["hyperparameters"]) & {"frames", "crop_size", "video_dim"}


@pytest.mark.parametrize(
    ("system", "frontend", "hyperparameters"),
    [
        ("logreg", "egemaps", {"C": 0.1}),
        ("svm", "compare", {}),
        ("fusion", "egemaps+whisper", {"C": (0.1, 0.1)}),
        ("audio", "egemaps", {}),
    ],
)
def test_pretrained_frontend_systems_learn_a_small_real_batch(
    sample_features: Path, system: str, frontend: str, hyperparameters: dict
) -> None:
    """The sample corpus's clips through the real pipeline: each system fits its 12 clips (anger vs sadness)."""
    spec = get_spec(system)
    features = load_features(sample_features, spec.needs, spec.input_kind, frontend)
    labels = task_labels(features, "emotion")
    settings = TrainSettings.of(_params(sample_features, epochs=40, patience=40, lr=3e-3, speed_perturbation=False))
    trained = fit(system, features, labels, features.clip_ids, [], settings, hyperparameters=hyperparameters)
    clips = trained_posteriors(trained, features, labels, features.clip_ids).clips
    predicted = [labels.classes[i] for i in np.asarray(clips.probabilities).argmax(axis=1)]
    truth = dict(zip(features.clip_ids, features.emotions, strict=True))
    accuracy = np.mean([p == truth[c] for p, c in zip(predicted, clips.clip_ids, strict=True)])
    assert accuracy >= 0.9, f"{system} on {frontend} fits {accuracy:.0%} of its training clips"
