"""The label set and the AVEF paper's binary arousal and valence tasks (its Table 2)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from avemo.labels import LabelError, binary_task_labels


def test_arousal_and_valence_labels_follow_avef_table_2_and_report_dropped_emotions():
    emotions = ["anger", "neutral", "sadness", "happiness", "neutral", "calm", "disgust"]
    arousal = binary_task_labels(emotions, "arousal")
    assert arousal.classes == ("low", "high")
    np.testing.assert_array_equal(arousal.kept, [0, 2, 3, 6])
    # anger high, sadness low, happiness high, disgust low
    np.testing.assert_array_equal(arousal.labels, [1, 0, 1, 0])
    assert arousal.dropped == {"neutral": 2, "calm": 1}
    valence = binary_task_labels(emotions, "valence")
    assert valence.classes == ("negative", "positive")
    np.testing.assert_array_equal(valence.labels, [0, 0, 1, 0])
    with pytest.raises(LabelError, match="unknown binary task 'dominance'"):
        binary_task_labels(emotions, "dominance")


def test_arousal_task_on_emodb(shared_data: Path):
    """EmoDB letters (shared data README): W anger, L boredom, E disgust, A fear, F happiness, T sadness, N neutral."""
    letters = dict(W="anger", L="boredom", E="disgust", A="fear", F="happiness", T="sadness", N="neutral")
    files = sorted((shared_data / "emodb" / "wav").glob("*.wav"))
    emotions = [letters[path.name[5]] for path in files]
    arousal = binary_task_labels(emotions, "arousal")
    assert arousal.dropped == {"boredom": emotions.count("boredom"), "neutral": emotions.count("neutral")}
    assert len(arousal.kept) + sum(arousal.dropped.values()) == len(files) == 278
    high = sum(emotions.count(e) for e in ("anger", "fear", "happiness"))
    assert int(arousal.labels.sum()) == high
