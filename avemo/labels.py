"""The one label set every corpus is mapped onto, and the AVEF paper's binary arousal/valence tasks.

Each corpus keeps its own label too (``corpus_label`` in the manifest); ``label`` is always one of
``EMOTIONS``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from avemo.errors import AvemoError


class LabelError(AvemoError):
    """A task or label outside the label set."""


EMOTIONS: tuple[str, ...] = (
    "anger",
    "boredom",
    "calm",
    "contempt",
    "disgust",
    "fear",
    "happiness",
    "neutral",
    "sadness",
    "surprise",
)

# AVEF paper, Table 2. Emotions the table does not name have no arousal/valence label.
AROUSAL: dict[str, str] = {
    "disgust": "low",
    "sadness": "low",
    "anger": "high",
    "happiness": "high",
    "fear": "high",
    "surprise": "high",
}
VALENCE: dict[str, str] = {
    "anger": "negative",
    "fear": "negative",
    "disgust": "negative",
    "sadness": "negative",
    "happiness": "positive",
    "surprise": "positive",
}


BINARY_CLASSES: dict[str, tuple[str, str]] = {
    "arousal": ("low", "high"),
    "valence": ("negative", "positive"),
}


@dataclass(frozen=True)
class BinaryTaskLabels:
    classes: tuple[str, str]
    labels: np.ndarray  # int indices into classes, one per kept clip
    kept: np.ndarray  # positions in the input of the clips kept, to select their features and ids
    dropped: dict[str, int]  # emotion -> clips dropped because the task gives it no binary label


def binary_task_labels(emotions: Sequence[str], task: Literal["arousal", "valence"]) -> BinaryTaskLabels:
    """Map emotions to the AVEF paper's binary arousal or valence task (its Table 2, above).

    Emotions the table leaves out (e.g. neutral) have no binary label: their clips are dropped, and
    counted in ``dropped`` so a report can say how much of the corpus the task scores.
    """
    if task not in BINARY_CLASSES:
        raise LabelError(f"unknown binary task {task!r}; use one of {sorted(BINARY_CLASSES)}")
    mapping = AROUSAL if task == "arousal" else VALENCE
    classes = BINARY_CLASSES[task]
    kept = [i for i, emotion in enumerate(emotions) if emotion in mapping]
    dropped: dict[str, int] = {}
    for emotion in emotions:
        if emotion not in mapping:
            dropped[emotion] = dropped.get(emotion, 0) + 1
    return BinaryTaskLabels(
        classes=classes,
        labels=np.array([classes.index(mapping[emotions[i]]) for i in kept], dtype=np.int64),
        kept=np.array(kept, dtype=np.int64),
        dropped=dropped,
    )
