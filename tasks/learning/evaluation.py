"""Evaluation's tables and reports from predictions, ensembles of seeds, and the comparison of two systems.

Every table keeps the probabilities in the task's class order, so ensembles and re-scoring need no
re-run.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from avemo.errors import AvemoError
from avemo.schemas import PREDICTIONS, SEGMENT_PREDICTIONS
from tasks.learning.checkpoints import load_trained
from tasks.learning.features import Features, TaskLabels
from tasks.learning.inference import ClipPredictions, SegmentPredictions, trained_posteriors
from tasks.learning.metrics import MatchedPairsResult, average_posteriors, classification_report, matched_pairs_test
from tasks.learning.trained import EpochRecord


class EvaluateError(AvemoError):
    """Predictions that cannot be combined, scored or compared as asked."""


def ensemble(members: Sequence[ClipPredictions]) -> ClipPredictions:
    """Posterior averaging of several seeds' (or systems') predictions of the same clips."""
    if not members:
        raise EvaluateError("no predictions to ensemble")
    first = members[0]
    for other in members[1:]:
        if other.clip_ids != first.clip_ids or other.classes != first.classes:
            raise EvaluateError("ensemble members must predict the same clips in the same order over the same classes")
    return ClipPredictions(
        first.clip_ids,
        first.true,
        average_posteriors([m.probabilities for m in members]),
        first.classes,
    )


def _average_segments(members: list[SegmentPredictions]) -> SegmentPredictions:
    first = members[0]
    probabilities = np.mean([m.probabilities for m in members], axis=0)
    return SegmentPredictions(first.clip_ids, first.segments, first.true, probabilities, first.classes)


def fold_predictions(
    fold: str, checkpoints: Sequence[Path], features: Features, labels: TaskLabels, test_clips: Sequence[str]
) -> tuple[ClipPredictions, SegmentPredictions | None, dict[tuple[str, int], list[EpochRecord]]]:
    """A fold's test clips scored by its checkpoints (one per seed), posteriors averaged over the seeds;
    and each seed's training history."""
    clips, segments, histories = [], [], {}
    for path in checkpoints:
        trained = load_trained(path)
        predictions = trained_posteriors(trained, features, labels, test_clips)
        clips.append(predictions.clips)
        if predictions.segments is not None:
            segments.append(predictions.segments)
        histories[(fold, trained.settings.seed)] = trained.history
    return ensemble(clips), (_average_segments(segments) if segments else None), histories


def predictions_table(predictions: ClipPredictions | SegmentPredictions, fold: str, system: str) -> pa.Table:
    """One row per clip (or segment): ids, fold, system, true and predicted label, probabilities."""
    classes = np.asarray(predictions.classes, dtype=object)
    n = len(predictions.clip_ids)
    columns: dict[str, Any] = {
        "clip_id": pa.array(predictions.clip_ids, pa.string()),
        "fold": pa.array([fold] * n, pa.string()),
        "system": pa.array([system] * n, pa.string()),
        "true": pa.array(classes[predictions.true].tolist(), pa.string()),
        "predicted": pa.array(classes[predictions.predicted].tolist(), pa.string()),
        "probabilities": pa.array(
            predictions.probabilities.astype(np.float32).tolist(),
            pa.list_(pa.float32()),
        ),
    }
    if isinstance(predictions, SegmentPredictions):
        columns = {
            "clip_id": columns.pop("clip_id"),
            "segment": pa.array(predictions.segments, pa.int32()),
            **columns,
        }
        return pa.table(columns, schema=SEGMENT_PREDICTIONS)
    return pa.table(columns, schema=PREDICTIONS)


def _indices(table: pa.Table, column: str, classes: Sequence[str]) -> np.ndarray:
    position = {name: i for i, name in enumerate(classes)}
    values = table[column].to_pylist()
    unknown = sorted(set(values) - set(position))
    if unknown:
        raise EvaluateError(f"{column} labels {unknown} are not among the classes {list(classes)}")
    return np.array([position[v] for v in values], dtype=np.int64)


def evaluation_report(table: pa.Table, classes: Sequence[str]) -> dict[str, Any]:
    """Per-fold reports, the pooled report over all folds' clips, and the mean and spread of fold UARs.

    The pooled UAR (every test clip once) is what leave-one-speaker-out papers report; the fold mean
    weighs speakers equally and its standard deviation shows how speaker-dependent the model is.
    """
    if table.num_rows == 0:
        raise EvaluateError("no predictions to report on")
    folds = {}
    for fold in dict.fromkeys(table["fold"].to_pylist()):
        rows = table.filter(pc.equal(table["fold"], fold))
        folds[fold] = classification_report(
            _indices(rows, "true", classes),
            _indices(rows, "predicted", classes),
            classes,
        )
    uars = np.array([r["uar"] for r in folds.values()])
    return {
        "folds": folds,
        "pooled": classification_report(
            _indices(table, "true", classes),
            _indices(table, "predicted", classes),
            classes,
        ),
        "fold_uar_mean": float(uars.mean()),
        "fold_uar_std": float(uars.std()),
    }


def learning_curve_rows(
    histories: Mapping[tuple[str, int], Sequence[Any]],
) -> list[dict[str, Any]]:
    """One row per (fold, seed, epoch) from the training histories' EpochRecords, for DVC plots."""
    return [
        {"fold": fold, "seed": seed, **dataclasses.asdict(record)}
        for (fold, seed), history in histories.items()
        for record in history
    ]


def confusion_rows(table: pa.Table) -> list[dict[str, str]]:
    """{actual, predicted} per clip: the rows DVC's confusion template counts."""
    return [
        {"actual": t, "predicted": p}
        for t, p in zip(table["true"].to_pylist(), table["predicted"].to_pylist(), strict=True)
    ]


def recall_rows(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """{class, recall, support} per class of a classification report, for a bar plot."""
    return [
        {"class": name, "recall": scores["recall"], "support": scores["support"]}
        for name, scores in report["per_class"].items()
    ]


def compare_systems(predictions_a: pa.Table, predictions_b: pa.Table) -> MatchedPairsResult:
    """Matched-pairs test of system B (candidate) against A (baseline) on the clips both predicted.

    The two tables must cover the same clips, each once, with the same true labels: a test on
    different clips would compare corpora, not systems.
    """

    def by_clip(table: pa.Table, name: str) -> dict[str, tuple[str, str]]:
        clips = table["clip_id"].to_pylist()
        if len(set(clips)) != len(clips):
            raise EvaluateError(f"{name} lists a clip more than once; compare clip-level tables of one evaluation")
        return dict(
            zip(clips, zip(table["true"].to_pylist(), table["predicted"].to_pylist(), strict=True), strict=True)
        )

    a, b = (
        by_clip(predictions_a, "predictions_a"),
        by_clip(predictions_b, "predictions_b"),
    )
    if set(a) != set(b):
        raise EvaluateError(
            f"the systems predicted different clips ({len(set(a) - set(b))} only in a, {len(set(b) - set(a))} "
            "only in b); evaluate both on the same folds"
        )
    clips = sorted(a)
    if any(a[c][0] != b[c][0] for c in clips):
        raise EvaluateError("the systems disagree on true labels; they were evaluated on different tasks")
    labels = sorted({a[c][0] for c in clips} | {a[c][1] for c in clips} | {b[c][1] for c in clips})
    index = {name: i for i, name in enumerate(labels)}
    return matched_pairs_test(
        [index[a[c][0]] for c in clips],
        [index[a[c][1]] for c in clips],
        [index[b[c][1]] for c in clips],
    )
