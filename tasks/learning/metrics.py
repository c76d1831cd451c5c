"""Scores of a classifier on labelled clips, the papers' significance test, and their helper tasks.

Labels are integer arrays indexing a class list, so a score never depends on how a corpus spells its
labels. Everything here is numpy on arrays already in memory; writing reports is the caller's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avemo.errors import AvemoError


class MetricsError(AvemoError):
    """Labels, predictions or posteriors that cannot be scored as given."""


def _checked_labels(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Refuse what would silently give a wrong score: ragged, empty, float or out-of-range labels."""
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.ndim != 1 or pred.ndim != 1 or true.shape != pred.shape:
        raise MetricsError(
            f"y_true and y_pred must be 1-D arrays of the same length, got shapes {true.shape} and {pred.shape}"
        )
    if true.size == 0:
        raise MetricsError("no clips to score: y_true is empty")
    for name, labels in (("y_true", true), ("y_pred", pred)):
        if not np.issubdtype(labels.dtype, np.integer):
            raise MetricsError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
        outside = labels[(labels < 0) | (labels >= n_classes)]
        if outside.size:
            raise MetricsError(
                f"{name} holds class index {int(outside[0])} outside 0..{n_classes - 1}; pass the full class list"
            )
    return true.astype(np.int64), pred.astype(np.int64)


def confusion_matrix(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    n_classes: int,
) -> np.ndarray:
    """Counts with rows = true class and columns = predicted class (the papers' figure layout)."""
    true, pred = _checked_labels(y_true, y_pred, n_classes)
    counts = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(counts, (true, pred), 1)
    return counts


def accuracy(y_true: Sequence[int] | np.ndarray, y_pred: Sequence[int] | np.ndarray) -> float:
    """Share of clips classified correctly: what the papers call accuracy or weighted accuracy (WA)."""
    true = np.asarray(y_true)
    pred = np.asarray(y_pred)
    if true.ndim != 1 or true.shape != pred.shape or true.size == 0:
        raise MetricsError(
            f"y_true and y_pred must be non-empty 1-D arrays of the same length, got {true.shape} and {pred.shape}"
        )
    return float(np.mean(true == pred))


def per_class_recall(confusion: np.ndarray) -> np.ndarray:
    """Recall of each class; NaN for a class with no true clip, whose recall is undefined (0/0)."""
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(support > 0, np.diag(confusion) / support, np.nan)


def unweighted_average_recall(confusion: np.ndarray) -> float:
    """Mean recall over the classes present in y_true (UAR), so rare classes weigh as much as common ones.

    A class absent from y_true has no recall to average; counting it as 0 or 1 would make the score
    depend on which unseen classes the class list happens to name.
    """
    return float(np.nanmean(per_class_recall(confusion)))


def _per_class_precision_f1(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision and F1 per class; NaN where a class is neither true nor predicted (F1 = 0/0)."""
    hits = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    support = confusion.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, hits / predicted, np.nan)
        f1 = np.where(support + predicted > 0, 2 * hits / (support + predicted), np.nan)
    return precision, f1


def macro_f1(confusion: np.ndarray) -> float:
    """Mean F1 over classes that are true or predicted at least once.

    A class predicted but never true has F1 = 0 and is counted, penalising spurious predictions; a class
    neither true nor predicted has no F1 and is left out, as in UAR.
    """
    return float(np.nanmean(_per_class_precision_f1(confusion)[1]))


def _json_number(value: float) -> float | None:
    """NaN is not JSON; an undefined score becomes null."""
    return None if math.isnan(value) else float(value)


def classification_report(
    y_true: Sequence[int] | np.ndarray,
    y_pred: Sequence[int] | np.ndarray,
    classes: Sequence[str],
) -> dict:
    """Every score of one evaluation as plain JSON types, ready for ``json.dump`` and DVC metrics."""
    confusion = confusion_matrix(y_true, y_pred, len(classes))
    recall = per_class_recall(confusion)
    precision, f1 = _per_class_precision_f1(confusion)
    support = confusion.sum(axis=1)
    return {
        "n_clips": int(confusion.sum()),
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "uar": unweighted_average_recall(confusion),
        "macro_f1": macro_f1(confusion),
        "classes": list(classes),
        "classes_absent_from_truth": [name for name, count in zip(classes, support, strict=True) if count == 0],
        "per_class": {
            name: {
                "support": int(support[i]),
                "recall": _json_number(recall[i]),
                "precision": _json_number(precision[i]),
                "f1": _json_number(f1[i]),
            }
            for i, name in enumerate(classes)
        },
        "confusion_matrix": confusion.tolist(),
    }


@dataclass(frozen=True)
class MatchedPairsResult:
    statistic: float  # W; positive when the candidate makes fewer errors than the baseline
    p_value: float  # one-tailed, H1: the candidate is better
    better: Literal["baseline", "candidate", "tie"]
    n_clips: int
    baseline_errors: int
    candidate_errors: int


def matched_pairs_test(
    y_true: Sequence[int] | np.ndarray,
    baseline_pred: Sequence[int] | np.ndarray,
    candidate_pred: Sequence[int] | np.ndarray,
) -> MatchedPairsResult:
    """The "Matched Pair Test" the AM-FBP paper (Sec. IV-D, Tables IV-VI) uses to compare two systems.

    It is the matched-pairs sentence-segment word error (MAPSSWE) test of Pallett, Fisher and Fiscus,
    ICASSP 1990 (after Gillick and Cox 1989), with each clip as one segment: Z_i = baseline errors -
    candidate errors on clip i (here -1, 0 or 1), W = mean(Z) / (s_Z / sqrt(n)) with s_Z the sample
    standard deviation (n - 1), and W ~ N(0, 1) under H0 "no difference" for large n. Like the paper it
    is one-tailed: p = P(N(0, 1) >= W) for the pre-stated H1 "the candidate is better"; Pallett's
    two-tailed p is 2 * min(p, 1 - p). Per clip it cannot give the paper's Table IV p = 0.004 for
    AG-FBP's 5 more correct clips of 383 (the smallest reachable is 0.012), so the paper's segments are
    presumably finer than clips; pass per-segment predictions to test at that level.
    """
    true = np.asarray(y_true)
    if not (true.shape == np.shape(baseline_pred) == np.shape(candidate_pred)) or true.ndim != 1 or true.size < 2:
        raise MetricsError(
            "y_true, baseline_pred and candidate_pred must be 1-D, of one length and hold at least 2 clips, "
            f"got shapes {true.shape}, {np.shape(baseline_pred)} and {np.shape(candidate_pred)}"
        )
    baseline_errors = (np.asarray(baseline_pred) != true).astype(np.float64)
    candidate_errors = (np.asarray(candidate_pred) != true).astype(np.float64)
    differences = baseline_errors - candidate_errors
    mean = float(differences.mean())
    std = float(differences.std(ddof=1))
    if std > 0:
        statistic = mean / (std / math.sqrt(true.size))
    else:  # every clip differs in the same way (or not at all): the evidence is all-or-nothing
        statistic = math.copysign(math.inf, mean) if mean else 0.0
    p_value = 0.5 * math.erfc(statistic / math.sqrt(2.0))
    return MatchedPairsResult(
        statistic=statistic,
        p_value=p_value,
        better="candidate" if mean > 0 else "baseline" if mean < 0 else "tie",
        n_clips=int(true.size),
        baseline_errors=int(baseline_errors.sum()),
        candidate_errors=int(candidate_errors.sum()),
    )


def average_posteriors(posteriors: Sequence[np.ndarray], atol: float = 1e-4) -> np.ndarray:
    """Ensemble of N models by the mean of their class posteriors, (clips, classes) each in one class order.

    Averaging probabilities rather than logits keeps every model's vote on the same scale; the rows are
    checked to be distributions so raw logits are not averaged by mistake.
    """
    if not posteriors:
        raise MetricsError("no posteriors to average: pass at least one model's (clips, classes) array")
    shapes = [np.shape(p) for p in posteriors]
    if len(set(shapes)) != 1 or len(shapes[0]) != 2:
        raise MetricsError(f"posteriors must all be (clips, classes) arrays of one shape, got shapes {shapes}")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in posteriors])
    row_sums = stacked.sum(axis=2)
    if (stacked < 0).any() or not np.allclose(row_sums, 1.0, atol=atol):
        raise MetricsError(
            "posteriors must be probabilities (non-negative rows summing to 1); apply softmax to logits first"
        )
    return stacked.mean(axis=0)
