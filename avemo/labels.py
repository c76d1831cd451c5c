"""The one label set every corpus is mapped onto, and the AVEF paper's binary arousal/valence tasks.

Each corpus keeps its own label too (``corpus_label`` in the manifest); ``label`` is always one of
``EMOTIONS``.
"""

from __future__ import annotations

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
