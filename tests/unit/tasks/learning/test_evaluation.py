"""Evaluation: predictions tables, per-fold and pooled reports against a hand-checked example, ensembles,
segment-to-clip posteriors, plot rows, and the matched-pairs comparison of two systems."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from avemo.schemas import PREDICTIONS
from models.avef import ClipSVM
from models.registry import build_model
from tasks.learning.datasets import make_dataset
from tasks.learning.evaluation import (
    EvaluateError,
    compare_systems,
    confusion_rows,
    ensemble,
    evaluation_report,
    learning_curve_rows,
    predictions_table,
    recall_rows,
)
from tasks.learning.features import Features, SegmentArrays, TaskLabels
from tasks.learning.inference import ClipPredictions, model_posteriors
from tasks.learning.standardization import Standardization
from tasks.learning.trained import EpochRecord

CLASSES = ("anger", "boredom", "sadness")


def hand_checked_table() -> pa.Table:
    """Fold f1: c1 right, c2 (boredom) taken for anger, c3 right. Fold f2: c4 (anger) taken for
    boredom, c5 right."""
    f1 = ClipPredictions(
        ("c1", "c2", "c3"), np.array([0, 1, 2]), np.array([[0.7, 0.2, 0.1], [0.5, 0.4, 0.1], [0.1, 0.2, 0.7]]), CLASSES
    )
    f2 = ClipPredictions(("c4", "c5"), np.array([0, 1]), np.array([[0.2, 0.6, 0.2], [0.1, 0.8, 0.1]]), CLASSES)
    return pa.concat_tables([predictions_table(f1, "f1", "sys"), predictions_table(f2, "f2", "sys")])


def test_predictions_table_rows():
    table = hand_checked_table()
    assert table.schema == PREDICTIONS
    assert table["true"].to_pylist() == ["anger", "boredom", "sadness", "anger", "boredom"]
    assert table["predicted"].to_pylist() == ["anger", "anger", "sadness", "boredom", "boredom"]
    assert table["fold"].to_pylist() == ["f1"] * 3 + ["f2"] * 2
    np.testing.assert_allclose(table["probabilities"].to_pylist()[1], [0.5, 0.4, 0.1], rtol=1e-6)


def test_report_per_fold_and_pooled_by_hand():
    report = evaluation_report(hand_checked_table(), CLASSES)
    f1, f2, pooled = report["folds"]["f1"], report["folds"]["f2"], report["pooled"]
    assert f1["uar"] == pytest.approx((1 + 0 + 1) / 3) and f1["accuracy"] == pytest.approx(2 / 3)
    assert f2["uar"] == pytest.approx((0 + 1) / 2)  # sadness absent from f2: not averaged
    assert f2["classes_absent_from_truth"] == ["sadness"]
    assert pooled["n_clips"] == 5 and pooled["accuracy"] == pytest.approx(3 / 5)
    assert pooled["uar"] == pytest.approx((1 / 2 + 1 / 2 + 1) / 3)
    assert pooled["confusion_matrix"] == [[1, 1, 0], [1, 1, 0], [0, 0, 1]]
    assert report["fold_uar_mean"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert report["fold_uar_std"] == pytest.approx((2 / 3 - 1 / 2) / 2)


def test_plot_rows():
    table = hand_checked_table()
    rows = confusion_rows(table)
    assert rows[1] == {"actual": "boredom", "predicted": "anger"} and len(rows) == 5
    recalls = recall_rows(evaluation_report(table, CLASSES)["pooled"])
    assert recalls == [
        {"class": "anger", "recall": 0.5, "support": 2},
        {"class": "boredom", "recall": 0.5, "support": 2},
        {"class": "sadness", "recall": 1.0, "support": 1},
    ]
    history = [EpochRecord(1, 1.0, 0.9, 0.5, 0.6, 2.0), EpochRecord(2, 0.8, 0.7, 0.6, 0.7, 2.1)]
    curve = learning_curve_rows({("f1", 0): history})
    assert curve[1] == {
        "fold": "f1",
        "seed": 0,
        "epoch": 2,
        "train_loss": 0.8,
        "val_loss": 0.7,
        "val_uar": 0.6,
        "val_accuracy": 0.7,
        "seconds": 2.1,
    }


def test_report_refuses_unknown_labels():
    with pytest.raises(EvaluateError, match="not among the classes"):
        evaluation_report(hand_checked_table(), ("anger", "boredom"))


def test_ensemble_averages_posteriors():
    ids, true = ("x", "y"), np.array([0, 1])
    a = ClipPredictions(ids, true, np.array([[0.6, 0.4], [0.2, 0.8]]), ("p", "q"))
    b = ClipPredictions(ids, true, np.array([[0.2, 0.8], [0.4, 0.6]]), ("p", "q"))
    mean = ensemble([a, b])
    np.testing.assert_allclose(mean.probabilities, [[0.4, 0.6], [0.3, 0.7]])
    assert mean.predicted.tolist() == [1, 1]
    with pytest.raises(EvaluateError, match="same clips"):
        ensemble([a, ClipPredictions(("y", "x"), true, b.probabilities, ("p", "q"))])


def _system(predicted: dict[str, str]) -> pa.Table:
    truth = {"c1": "anger", "c2": "boredom", "c3": "anger", "c4": "sadness"}
    clips = list(predicted)
    return pa.table({"clip_id": clips, "true": [truth[c] for c in clips], "predicted": [predicted[c] for c in clips]})


def test_compare_systems_matches_clips_whatever_their_order():
    baseline = _system({"c1": "boredom", "c2": "anger", "c3": "anger", "c4": "sadness"})  # 2 errors
    candidate = _system({"c4": "sadness", "c3": "anger", "c2": "boredom", "c1": "anger"})  # none
    result = compare_systems(baseline, candidate)
    assert (result.baseline_errors, result.candidate_errors, result.n_clips) == (2, 0, 4)
    # Z = (1, 1, 0, 0): mean 0.5, sample std sqrt(1/3), W = 0.5 / (sqrt(1/3) / 2)
    w = 0.5 / (math.sqrt(1 / 3) / 2)
    assert result.statistic == pytest.approx(w)
    assert result.p_value == pytest.approx(0.5 * math.erfc(w / math.sqrt(2)))
    assert result.better == "candidate"
    assert compare_systems(candidate, baseline).better == "baseline"


def test_compare_systems_refuses_different_clips_or_truths():
    a = _system({"c1": "anger", "c2": "anger"})
    with pytest.raises(EvaluateError, match="different clips"):
        compare_systems(a, _system({"c1": "anger", "c3": "anger"}))
    relabelled = a.set_column(1, "true", pa.array(["anger", "sadness"]))
    with pytest.raises(EvaluateError, match="true labels"):
        compare_systems(a, relabelled)
    with pytest.raises(EvaluateError, match="more than once"):
        compare_systems(pa.concat_tables([a, a]), a)


@pytest.fixture(scope="module")
def segment_setup():
    """Two clips of 3 and 2 log-mel segments, a tiny AVEF audio-net, identity standardisation."""
    rng = np.random.default_rng(0)
    clip_ids = np.array(["u", "u", "u", "v", "v"], dtype=object)
    arrays = SegmentArrays(
        clip_ids, np.array([0, 1, 2, 0, 1]), rng.normal(size=(5, 3, 64, 64)).astype(np.float32), None, None
    )
    features = Features(
        ("u", "v"), ("s1", "s2"), ("anger", "sadness"), frozenset({"audio"}), "segment", {}, segments=arrays
    )
    labels = TaskLabels("emotion", CLASSES, {"u": 0, "v": 2}, {})
    identity = Standardization({"log_mel": (np.zeros((3, 64, 1), np.float32), np.ones((3, 64, 1), np.float32))})
    torch.manual_seed(0)
    model = build_model("avef_audio", len(CLASSES), features.shapes, width=1 / 16, fc_dim=8)
    return model, make_dataset(features, labels, ["u", "v"], identity), arrays


def test_segment_model_clip_posterior_is_the_mean_of_its_segments(segment_setup):
    model, dataset, arrays = segment_setup
    predictions = model_posteriors(model, dataset, CLASSES, batch_size=2)
    segments = predictions.segments
    assert segments.clip_ids == tuple(arrays.clip_ids) and segments.segments.tolist() == [0, 1, 2, 0, 1]
    with torch.no_grad():
        direct = torch.softmax(model(torch.from_numpy(arrays.audio)).logits, dim=-1).numpy()
    np.testing.assert_allclose(segments.probabilities, direct, rtol=1e-5, atol=1e-6)
    clips = predictions.clips
    assert clips.clip_ids == ("u", "v") and clips.true.tolist() == [0, 2]
    np.testing.assert_allclose(clips.probabilities, [direct[:3].mean(0), direct[3:].mean(0)], rtol=1e-5)
    assert clips.embeddings.shape == (2, 8)
    table = predictions_table(segments, "f1", "avef_audio")
    assert table.column_names[:2] == ["clip_id", "segment"] and table["true"].to_pylist()[3] == "sadness"


def test_clip_svm_posteriors_cover_every_class(segment_setup):
    """An SVM that saw two of three classes gives the third probability 0, columns in class order."""
    model, dataset, _ = segment_setup
    rng = np.random.default_rng(1)
    embeddings = np.concatenate([rng.normal(0, 0.1, (6, 8)), rng.normal(1, 0.1, (6, 8))])
    svm = ClipSVM(degree=1, C=1.0).fit(embeddings, [0] * 6 + [2] * 6)
    clips = model_posteriors(model, dataset, CLASSES, clip_svm=svm).clips
    np.testing.assert_array_equal(clips.probabilities[:, 1], 0.0)
    np.testing.assert_allclose(clips.probabilities.sum(axis=1), 1.0)
    np.testing.assert_allclose(clips.probabilities[:, [0, 2]], svm.predict_proba(clips.embeddings))
