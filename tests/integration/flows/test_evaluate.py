"""The evaluate flow: each fold's checkpoints score its test speakers; the reports pool every fold."""

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
from tasks.learning.metrics import classification_report

SMALL = {
    "audio": {"audio_channels": (16, 32, 48, 48, 32)},
    "avef": {"width": 0.125, "fc_dim": 64, "dbn_hidden": (64, 32)},
}
CLASSES = ["anger", "sadness"]


@pytest.fixture(scope="module", params=["audio", "avef"])
def evaluated(request, sample_features: Path, tmp_path_factory) -> tuple[str, Path, dict]:
    """A clip system and a segment system, trained for 3 epochs and evaluated."""
    system = request.param
    root = tmp_path_factory.mktemp(f"evaluate-{system}")
    params = TrainParams(features_dir=sample_features, epochs=3, patience=2, batch_size=8)
    run_train(system, params, SMALL[system], root / "models")
    metrics = evaluate_flow(
        system=system, model_dir=root / "models", features_dir=sample_features, out_dir=root / "eval"
    )
    return system, root / "eval", metrics


def test_metrics_pool_every_folds_test_clips(evaluated) -> None:
    system, out, metrics = evaluated
    predictions = pq.read_table(out / "predictions.parquet").to_pylist()
    assert len(predictions) == 12 and len({p["clip_id"] for p in predictions}) == 12
    assert {p["fold"] for p in predictions} == {"loso-1001", "loso-1002", "loso-1003"}
    expected = classification_report(
        [CLASSES.index(p["true"]) for p in predictions], [CLASSES.index(p["predicted"]) for p in predictions], CLASSES
    )
    assert metrics["uar"] == pytest.approx(expected["uar"])
    assert json.loads((out / "metrics.json").read_text())["accuracy"] == pytest.approx(expected["accuracy"])
    report = json.loads((out / "report.json").read_text())
    assert set(report["folds"]) == {"loso-1001", "loso-1002", "loso-1003"}
    assert (pq.read_metadata(out / "segment_predictions.parquet").num_rows > 0) == (system == "avef")


def test_plot_data_for_dvc(evaluated) -> None:
    _, out, _ = evaluated
    assert (out / "confusion.csv").read_text().startswith("actual,predicted")
    assert (out / "recall.csv").read_text().splitlines()[0] == "class,recall,support"
    assert len((out / "learning_curve.csv").read_text().splitlines()) > 3


def test_compare_runs_the_matched_pairs_test_on_two_evaluations(evaluated) -> None:
    _, out, _ = evaluated
    result = CliRunner().invoke(app, ["compare", str(out / "predictions.parquet"), str(out / "predictions.parquet")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["better"] == "tie"


def test_a_folder_without_checkpoints_is_refused(sample_features: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["evaluate", "--system", "audio", "--models", str(tmp_path), "--features", str(sample_features)]
    )
    assert result.exit_code == 1 and "no checkpoints in" in result.output
