"""Scores against hand-computed examples, the matched-pairs test against a hand computation and scipy."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import f1_score, recall_score

from tasks.learning.metrics import (
    MetricsError,
    accuracy,
    average_posteriors,
    classification_report,
    confusion_matrix,
    macro_f1,
    matched_pairs_test,
    per_class_recall,
    unweighted_average_recall,
)

CLASSES = ["anger", "happiness", "neutral"]
# true anger x3, happiness x2, neutral x1; one anger called happiness, one happiness called neutral
Y_TRUE = np.array([0, 0, 0, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2])


def test_confusion_matrix_rows_are_true_classes_and_columns_predictions():
    expected = np.array(
        [
            [2, 1, 0],  # anger: 2 right, 1 called happiness
            [0, 1, 1],  # happiness: 1 right, 1 called neutral
            [0, 0, 1],  # neutral: right
        ]
    )
    np.testing.assert_array_equal(confusion_matrix(Y_TRUE, Y_PRED, 3), expected)
    # a lone anger clip called neutral sits in row 0, column 2 and nowhere else
    lone = confusion_matrix([0], [2], 3)
    assert lone[0, 2] == 1 and lone.sum() == 1


def test_scores_of_a_hand_computed_example():
    confusion = confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    np.testing.assert_allclose(per_class_recall(confusion), [2 / 3, 1 / 2, 1 / 1])
    assert unweighted_average_recall(confusion) == pytest.approx((2 / 3 + 1 / 2 + 1) / 3)  # 13/18
    # F1 = 2 TP / (true + predicted): anger 4/5, happiness 2/4, neutral 2/3
    assert macro_f1(confusion) == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)  # 59/90
    assert macro_f1(confusion) == pytest.approx(f1_score(Y_TRUE, Y_PRED, average="macro"))


def test_uar_differs_from_accuracy_on_imbalanced_classes():
    y_true = np.array([0] * 9 + [1])
    always_majority = np.zeros(10, dtype=int)
    confusion = confusion_matrix(y_true, always_majority, 2)
    assert accuracy(y_true, always_majority) == pytest.approx(0.9)
    assert unweighted_average_recall(confusion) == pytest.approx(0.5)  # (9/9 + 0/1) / 2
    assert macro_f1(confusion) == pytest.approx((18 / 19 + 0) / 2)  # F1 majority = 18/19, minority 0


def test_classes_absent_from_truth_are_left_out_of_uar_but_a_spurious_prediction_costs_macro_f1():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 2, 1, 1])  # class 2 predicted once, never true; class 3 neither
    report = classification_report(y_true, y_pred, ["a", "b", "c", "d"])
    assert report["uar"] == pytest.approx((1 / 2 + 2 / 2) / 2)
    assert report["uar"] == pytest.approx(recall_score(y_true, y_pred, labels=[0, 1], average="macro"))
    assert report["macro_f1"] == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert report["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, labels=[0, 1, 2], average="macro"))
    assert report["classes_absent_from_truth"] == ["c", "d"]
    assert report["per_class"]["c"] == {"support": 0, "recall": None, "precision": 0.0, "f1": 0.0}
    assert report["per_class"]["d"] == {"support": 0, "recall": None, "precision": None, "f1": None}


def test_classification_report_is_json_ready_and_complete():
    report = json.loads(json.dumps(classification_report(Y_TRUE, Y_PRED, CLASSES)))
    assert report["n_clips"] == 6
    assert report["accuracy"] == pytest.approx(4 / 6)
    assert report["uar"] == pytest.approx(13 / 18)
    assert report["macro_f1"] == pytest.approx(59 / 90)
    assert report["classes"] == CLASSES
    assert report["classes_absent_from_truth"] == []
    assert report["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert report["per_class"]["happiness"] == {"support": 2, "recall": 0.5, "precision": 0.5, "f1": 0.5}


@pytest.mark.parametrize(
    ("y_true", "y_pred", "message"),
    [
        ([0, 1], [0], "same length"),
        ([], [], "empty"),
        ([0.0, 1.0], [0, 1], "integer class indices"),
        ([0, 3], [0, 1], "class index 3 outside 0..2"),
        ([0, 1], [-1, 1], "class index -1 outside 0..2"),
    ],
)
def test_unscorable_labels_raise_a_clear_error(y_true, y_pred, message):
    with pytest.raises(MetricsError, match=message):
        classification_report(np.array(y_true), np.array(y_pred), CLASSES)


def _predictions_with_errors(n: int, wrong: list[int]) -> np.ndarray:
    """Predictions for n clips of true class 0, wrong (class 1) exactly on the clips listed."""
    pred = np.zeros(n, dtype=int)
    pred[wrong] = 1
    return pred


def test_matched_pairs_test_against_a_hand_computation():
    y_true = np.zeros(10, dtype=int)
    baseline = _predictions_with_errors(10, [0, 1, 2, 3])
    candidate = _predictions_with_errors(10, [0, 9])
    # Z = baseline errors - candidate errors = [0, 1, 1, 1, 0, 0, 0, 0, 0, -1]; mean 0.2;
    # sum of squared deviations 0.04 + 3 * 0.64 + 5 * 0.04 + 1.44 = 3.6, s^2 = 3.6 / 9 = 0.4,
    # standard error sqrt(0.4 / 10) = 0.2, so W = 0.2 / 0.2 = 1 and p = 1 - Phi(1) = 0.158655
    result = matched_pairs_test(y_true, baseline, candidate)
    assert result.statistic == pytest.approx(1.0)
    assert result.p_value == pytest.approx(0.158655, abs=1e-6)
    assert result.better == "candidate"
    assert (result.n_clips, result.baseline_errors, result.candidate_errors) == (10, 4, 2)
    swapped = matched_pairs_test(y_true, candidate, baseline)
    assert swapped.statistic == pytest.approx(-1.0)
    assert swapped.p_value == pytest.approx(1 - 0.158655, abs=1e-6)
    assert swapped.better == "baseline"


def test_matched_pairs_statistic_is_the_paired_t_statistic_on_per_clip_errors():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 7, 383)  # the size of the AFEW validation set the paper tests on
    baseline = np.where(rng.random(383) < 0.61, y_true, (y_true + 1) % 7)
    candidate = np.where(rng.random(383) < 0.66, y_true, (y_true + 2) % 7)
    result = matched_pairs_test(y_true, baseline, candidate)
    reference = stats.ttest_rel((baseline != y_true).astype(float), (candidate != y_true).astype(float))
    assert result.statistic == pytest.approx(reference.statistic)
    assert result.p_value == pytest.approx(stats.norm.sf(reference.statistic))
    # with hundreds of clips the normal approximation is within a few 1e-4 of Student's t
    t_one_sided = stats.ttest_rel(
        (baseline != y_true).astype(float), (candidate != y_true).astype(float), alternative="greater"
    )
    assert result.p_value == pytest.approx(t_one_sided.pvalue, abs=1e-3)


def test_matched_pairs_test_edge_cases():
    y_true = np.zeros(6, dtype=int)
    same = _predictions_with_errors(6, [1, 4])
    tie = matched_pairs_test(y_true, same, same)
    assert (tie.statistic, tie.p_value, tie.better) == (0.0, 0.5, "tie")
    # the candidate fixes every baseline error and adds none: Z has no spread, the evidence is total
    clean = matched_pairs_test(y_true, _predictions_with_errors(6, [0, 1, 2, 3, 4, 5]), np.zeros(6, dtype=int))
    assert clean.statistic == math.inf and clean.p_value == 0.0 and clean.better == "candidate"
    with pytest.raises(MetricsError, match="at least 2 clips"):
        matched_pairs_test([0], [0], [1])
    with pytest.raises(MetricsError, match="of one length"):
        matched_pairs_test([0, 1, 0], [0, 1], [0, 1, 1])


def test_average_posteriors_is_the_mean_of_the_models():
    first = np.array([[0.9, 0.1], [0.2, 0.8]])
    second = np.array([[0.5, 0.5], [0.6, 0.4]])
    np.testing.assert_allclose(average_posteriors([first, second]), [[0.7, 0.3], [0.4, 0.6]])
    np.testing.assert_allclose(average_posteriors([first]), first)


@pytest.mark.parametrize(
    ("posteriors", "message"),
    [
        ([], "at least one model"),
        ([np.full((2, 2), 0.5), np.full((3, 2), 0.5)], "one shape"),
        ([np.full(2, 0.5)], "one shape"),
        ([np.array([[2.0, -1.0]])], "apply softmax"),
        ([np.array([[3.0, 1.0]])], "apply softmax"),
    ],
)
def test_average_posteriors_refuses_what_is_not_comparable_probabilities(posteriors, message):
    with pytest.raises(MetricsError, match=message):
        average_posteriors(posteriors)
