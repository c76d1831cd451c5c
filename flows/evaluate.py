"""The evaluate flow: each fold's checkpoints predict that fold's test speakers; reports pool all folds.

Outputs in ``out_dir``: ``predictions.parquet`` (clip level; seeds averaged at the posterior level),
``segment_predictions.parquet`` (segment models), ``metrics.json`` (numbers for ``dvc metrics``),
``report.json`` (full per-fold reports with confusion matrices) and the plot data ``confusion.csv``,
``recall.csv``, ``learning_curve.csv`` for ``dvc plots``.
"""

from __future__ import annotations

import csv
import json
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from avemo import schemas
from avemo.errors import AvemoError
from avemo.parquet_io import read_table, write_table
from avemo.provenance import provenance
from models.registry import get_spec
from tasks.learning.evaluation import (
    compare_systems,
    confusion_rows,
    evaluation_report,
    fold_predictions,
    learning_curve_rows,
    predictions_table,
    recall_rows,
)
from tasks.learning.features import Features, TaskLabels, load_features, task_labels
from tasks.learning.metrics import MatchedPairsResult
from tasks.learning.trained import EpochRecord


class EvaluateInputError(AvemoError):
    """The model folder does not hold what evaluation needs."""


def _checkpoints(model_dir: Path) -> dict[str, list[Path]]:
    by_fold: dict[str, list[Path]] = defaultdict(list)
    for path in sorted(model_dir.glob("fold-*-seed*.pt")):
        by_fold[path.stem[len("fold-") : path.stem.rindex("-seed")]].append(path)
    if not by_fold:
        raise EvaluateInputError(f"no checkpoints in {model_dir}; run `avemo train --system ...` first")
    return by_fold


evaluate_fold = task(name="evaluate-fold", cache_policy=NO_CACHE)(fold_predictions)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["empty"])
        writer.writeheader()
        writer.writerows(rows)


def dvc_metrics(report: dict[str, Any], system: str, task_name: str) -> dict[str, Any]:
    """The numbers ``dvc metrics show/diff`` compare: pooled scores, per-class recall, per-fold UAR."""
    pooled = report["pooled"]
    return {
        "system": system,
        "task": task_name,
        "clips": pooled["n_clips"],
        "accuracy": pooled["accuracy"],
        "uar": pooled["uar"],
        "macro_f1": pooled["macro_f1"],
        "fold_uar_mean": report["fold_uar_mean"],
        "fold_uar_std": report["fold_uar_std"],
        "recall": {name: scores["recall"] for name, scores in pooled["per_class"].items()},
        "fold_uar": {fold: r["uar"] for fold, r in report["folds"].items()},
    }


def _score_folds(
    system: str, by_fold: dict[str, list[Path]], folds: pa.Table, features: Features, labels: TaskLabels
) -> tuple[pa.Table, pa.Table, dict[tuple[str, int], list[EpochRecord]]]:
    """Every fold's test clips scored by its checkpoints (a task per fold): clip and segment predictions."""
    runs = []
    for fold, checkpoints in by_fold.items():
        test = folds.filter(pc.and_(pc.equal(folds["fold"], fold), pc.equal(folds["role"], "test")))
        runs.append((fold, evaluate_fold.submit(fold, checkpoints, features, labels, test["clip_id"].to_pylist())))
    clip_tables, segment_tables, histories = [], [], {}
    for fold, future in runs:
        clips, segments, history = future.result()
        clip_tables.append(predictions_table(clips, fold, system))
        if segments is not None:
            segment_tables.append(predictions_table(segments, fold, system))
        histories.update(history)
    # segment predictions are written for clip models too (no rows): every evaluate stage declares them
    segments = pa.concat_tables(segment_tables) if segment_tables else schemas.SEGMENT_PREDICTIONS.empty_table()
    return pa.concat_tables(clip_tables), segments, histories


def _write_outputs(
    out_dir: Path,
    predictions: pa.Table,
    segments: pa.Table,
    report: dict[str, Any],
    metrics: dict[str, Any],
    histories: dict[tuple[str, int], list[EpochRecord]],
    classes: Sequence[str],
    document: dict[str, Any],
) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    write_table(predictions, out_dir / "predictions.parquet", schemas.PREDICTIONS, document)
    write_table(segments, out_dir / "segment_predictions.parquet", schemas.SEGMENT_PREDICTIONS, document)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    (out_dir / "report.json").write_text(json.dumps({**report, "classes": list(classes)}, indent=2))
    _write_csv(out_dir / "confusion.csv", confusion_rows(predictions))
    _write_csv(out_dir / "recall.csv", recall_rows(report["pooled"]))
    _write_csv(out_dir / "learning_curve.csv", learning_curve_rows(histories))


@flow(name="evaluate")
def evaluate_flow(system: str, model_dir: Path, features_dir: Path, out_dir: Path) -> dict[str, Any]:
    """Score ``system``'s checkpoints in ``model_dir`` on their folds' test speakers; outputs to ``out_dir``."""
    logger = get_run_logger()
    started = time.perf_counter()
    by_fold = _checkpoints(model_dir)
    train_doc = json.loads((model_dir / "train.json").read_text())
    folds = read_table(model_dir / "folds.parquet", schemas.FOLDS)
    spec = get_spec(system)
    features = load_features(features_dir, spec.needs, spec.input_kind, train_doc.get("frontend"))
    labels = task_labels(features, train_doc["params"]["task"])
    if list(labels.classes) != train_doc["classes"]:
        raise EvaluateInputError(
            f"{features_dir} gives classes {list(labels.classes)} but {system} was trained on {train_doc['classes']}; "
            "evaluate on the features it was trained on"
        )
    predictions, segments, histories = _score_folds(system, by_fold, folds, features, labels)
    report = evaluation_report(predictions, labels.classes)
    metrics = dvc_metrics(report, system, labels.task)
    document = provenance(
        "evaluate",
        {"system": system},
        model_dir=str(model_dir),
        features=str(features_dir),
        checkpoints=sorted(p.name for paths in by_fold.values() for p in paths),
        train_written_at=train_doc["written_at"],
        seconds=time.perf_counter() - started,
    )
    _write_outputs(out_dir, predictions, segments, report, metrics, histories, labels.classes, document)
    logger.info(
        "%s: pooled UAR %.3f, accuracy %.3f, macro-F1 %.3f over %d clips; fold UAR %.3f +- %.3f",
        system,
        metrics["uar"],
        metrics["accuracy"],
        metrics["macro_f1"],
        metrics["clips"],
        metrics["fold_uar_mean"],
        metrics["fold_uar_std"],
    )
    return metrics


def compare_predictions(baseline: Path, candidate: Path) -> MatchedPairsResult:
    """The matched-pairs test of two evaluations' ``predictions.parquet`` files."""
    return compare_systems(read_table(baseline, schemas.PREDICTIONS), read_table(candidate, schemas.PREDICTIONS))
