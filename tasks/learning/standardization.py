"""Per-feature standardisation, fitted on a fold's training clips or per speaker.

Statistics are fitted on the training clips only (a test clip must not shape the features it is scored
on) and travel with the checkpoint as plain lists, so prediction reuses them. Speaker normalisation
instead standardises every speaker on its own clips, labels unused, so a test speaker's statistics come
from its own unlabelled clips (:func:`speaker_standardization`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tasks.learning.features import DatasetError, Features

# A bin, band or dimension that never varies in the training clips is centred but not scaled: dividing
# by a near-zero std would blow up whatever a test clip puts there.
MIN_STD = 1e-6


@dataclass(frozen=True)
class Standardization:
    """Per-feature mean and std fitted on training clips: name -> (mean, std), broadcastable arrays.

    Names: ``spectrogram`` (bins,), ``log_mel`` (3, bands, 1), ``embedding`` (D,), and a pretrained
    front-end's name (``egemaps``, ``compare``, ``whisper``) for its vectors (P,) (see :func:`audio_key`).
    A missing value (openSMILE's NaN for a window too short for a functional) becomes the mean, 0.
    """

    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    def apply(self, name: str, x: np.ndarray) -> np.ndarray:
        mean, std = self.stats[name]
        return np.nan_to_num((x - mean) / std, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)

    def to_json(self) -> dict[str, dict[str, list]]:
        return {name: {"mean": mean.tolist(), "std": std.tolist()} for name, (mean, std) in self.stats.items()}

    @classmethod
    def from_json(cls, doc: dict[str, dict[str, list]]) -> Standardization:
        return cls(
            {
                name: (
                    np.asarray(v["mean"], np.float32),
                    np.asarray(v["std"], np.float32),
                )
                for name, v in doc.items()
            }
        )


def audio_key(frontend: str) -> str:
    """The name of an audio front-end's statistics: the papers' two keep their earlier names."""
    return {"linear": "spectrogram", "logmel": "log_mel"}.get(frontend, frontend)


@dataclass(frozen=True)
class Moments:
    """Per-feature count, mean and sum of squared deviations of the values present (openSMILE leaves NaN
    for a window too short for a functional), in float64. Two merge exactly (Chan et al.'s update), so
    statistics gathered a file or a window at a time equal those of all the rows at once."""

    count: np.ndarray
    mean: np.ndarray
    m2: np.ndarray

    @classmethod
    def of(cls, x: np.ndarray, axis: tuple[int, ...]) -> Moments:
        if np.isnan(x).any():
            count = (~np.isnan(x)).sum(axis=axis, keepdims=True).astype(np.float64)
            total = np.nansum(x, axis=axis, dtype=np.float64, keepdims=True)
            mean = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
            m2 = np.nansum((x - mean) ** 2, axis=axis, dtype=np.float64, keepdims=True)
        else:
            mean = x.mean(axis=axis, dtype=np.float64, keepdims=True)
            count = np.full(mean.shape, float(np.prod([x.shape[a] for a in axis])))
            m2 = np.sum((x - mean) ** 2, axis=axis, dtype=np.float64, keepdims=True)
        return cls(count, mean, np.asarray(m2))

    def merged(self, other: Moments) -> Moments:
        count = self.count + other.count
        weight = np.divide(other.count, count, out=np.zeros_like(count), where=count > 0)
        delta = other.mean - self.mean
        mean = self.mean + delta * weight
        return Moments(count, mean, self.m2 + other.m2 + delta**2 * self.count * weight)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) without the leading axis; a feature that never varies keeps std 1."""
        std = np.sqrt(np.divide(self.m2, self.count, out=np.zeros_like(self.m2), where=self.count > 0))
        return self.mean[0].astype(np.float32), np.where(std[0] < MIN_STD, 1.0, std[0]).astype(np.float32)


class RunningStandardization:
    """:func:`fit_standardization`'s statistics gathered over several calls of :meth:`add`: prediction
    fits a speaker's over that speaker's files, one window at a time."""

    def __init__(self) -> None:
        self._moments: dict[str, Moments] = {}

    def add(self, features: Features, clip_ids: Sequence[str]) -> None:
        key = audio_key(features.audio_frontend)
        if features.audio is not None:
            self._add(key, np.concatenate([features.audio[c] for c in clip_ids]), (0,))
        if features.pooled is not None:
            self._add(key, np.stack([features.pooled[c] for c in clip_ids]), (0,))
        if features.embeddings is not None:
            self._add("embedding", np.concatenate([features.embeddings[c] for c in clip_ids]), (0,))
        if features.segments is not None:
            audio = features.segments.audio[np.isin(features.segments.clip_ids, list(clip_ids))]
            # log-mel images per channel and mel band, over segments and frames
            self._add(key, audio, (0, 3) if audio.ndim == 4 else (0,))

    def _add(self, name: str, x: np.ndarray, axis: tuple[int, ...]) -> None:
        moments = Moments.of(x, axis)
        self._moments[name] = self._moments[name].merged(moments) if name in self._moments else moments

    def result(self) -> Standardization:
        return Standardization({name: moments.mean_std() for name, moments in self._moments.items()})


def fit_standardization(features: Features, train_clips: Sequence[str]) -> Standardization:
    """Statistics of every loaded feature over the training clips only."""
    if not train_clips:
        raise DatasetError("no training clips to fit the standardisation on")
    running = RunningStandardization()
    running.add(features, train_clips)
    return running.result()


def speaker_standardization(features: Features, clip_ids: Sequence[str]) -> dict[str, Standardization]:
    """One standardisation per speaker, each fitted on that speaker's clips among ``clip_ids``.

    Speaker normalisation: removing each voice's own level and spread leaves less speaker and more
    emotion in the features. It needs no labels, so a test speaker's statistics come from its own
    clips at prediction time.
    """
    speaker_of = dict(zip(features.clip_ids, features.speakers, strict=True))
    by_speaker: dict[str, list[str]] = {}
    for clip in clip_ids:
        by_speaker.setdefault(speaker_of[clip], []).append(clip)
    return {speaker: fit_standardization(features, clips) for speaker, clips in by_speaker.items()}


Standardizer = Standardization | Mapping[str, Standardization]  # one for all clips, or one per speaker


def per_clip_standardization(
    features: Features, clip_ids: Sequence[str], standardization: Standardizer
) -> dict[str, Standardization]:
    if isinstance(standardization, Standardization):
        return dict.fromkeys(clip_ids, standardization)
    speaker_of = dict(zip(features.clip_ids, features.speakers, strict=True))
    missing = sorted({speaker_of[c] for c in clip_ids} - set(standardization))
    if missing:
        raise DatasetError(f"no standardisation for speakers {missing}; fit one per speaker of the clips given")
    return {clip: standardization[speaker_of[clip]] for clip in clip_ids}


def typical_speaker(per_speaker: Mapping[str, Standardization]) -> Standardization:
    """A typical training speaker's statistics: the speakers' means averaged, and their variances.

    A speaker-normalised model standardises a file of an unknown speaker with these: a single file's
    own statistics would take its emotion (how loud, how high, how varied) away with the voice.
    """
    stats = list(per_speaker.values())
    names = stats[0].stats
    return Standardization(
        {
            name: (
                np.mean([s.stats[name][0] for s in stats], axis=0).astype(np.float32),
                np.sqrt(np.mean([s.stats[name][1] ** 2 for s in stats], axis=0)).astype(np.float32),
            )
            for name in names
        }
    )
