"""Train and evaluate flows under Prefect's test harness, on features of the built-in sample corpus."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from avemo.cli import app
from avemo.config import TrainParams
from flows.evaluate import evaluate_flow
from flows.train import run_train
from tasks.learning.checkpoints import load_checkpoint
from tasks.learning.metrics import classification_report


def _params(features: Path, **updates) -> TrainParams:
    return TrainParams(features_dir=features, epochs=3, patience=2, batch_size=8).model_copy(update=updates)


# Narrow networks: the test proves the path (folds, checkpoints, reports), not the paper's capacity.
SMALL = {
    "audio": {"audio_channels": (16, 32, 48, 48, 32)},
    "avef": {"width": 0.125, "fc_dim": 64, "dbn_hidden": (64, 32)},
}


@pytest.mark.parametrize("system", ["audio", "avef"])
def test_train_then_evaluate_speaker_independently(sample_features: Path, tmp_path: Path, system: str) -> None:
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

    out = tmp_path / "eval"
    metrics = evaluate_flow(system=system, model_dir=models, features_dir=sample_features, out_dir=out)
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(predictions) == 12 and len({p["clip_id"] for p in predictions}) == 12
    classes = ["anger", "sadness"]
    expected = classification_report(
        [classes.index(p["true"]) for p in predictions], [classes.index(p["predicted"]) for p in predictions], classes
    )
    assert metrics["uar"] == pytest.approx(expected["uar"])
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(expected["accuracy"])
    assert (out / "confusion.csv").read_text().startswith("actual,predicted")
    assert len((out / "learning_curve.csv").read_text().splitlines()) > 3
    assert (pq.read_metadata(out / "segment_predictions.parquet").num_rows > 0) == (system == "avef")


def test_a_model_needing_video_refuses_audio_only_features(sample_features: Path, tmp_path: Path) -> None:
    audio_only = tmp_path / "features"  # a features folder without frames.parquet: no video
    audio_only.mkdir()
    for name in ("clips", "segments", "failures"):
        (audio_only / f"{name}.parquet").write_bytes((sample_features / f"{name}.parquet").read_bytes())
    result = CliRunner().invoke(app, ["train", "--system", "gfbp", "--features", str(audio_only), "--params", "none.yaml"])
    assert result.exit_code == 1
    assert "needs video features" in result.output or "has no video" in result.output
