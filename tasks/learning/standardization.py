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


def _mean_std(x: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    if np.isnan(x).any():  # openSMILE's missing functionals: statistics of the values present
        mean, std = np.nanmean(x, axis=axis, dtype=np.float64), np.nanstd(x, axis=axis, dtype=np.float64)
        mean, std = np.nan_to_num(mean), np.nan_to_num(std)
    else:
        mean, std = x.mean(axis=axis, dtype=np.float64), x.std(axis=axis, dtype=np.float64)
    return np.asarray(mean, np.float32), np.where(std < MIN_STD, 1.0, std).astype(np.float32)


def fit_standardization(features: Features, train_clips: Sequence[str]) -> Standardization:
    """Statistics of every loaded feature over the training clips only."""
    if not train_clips:
        raise DatasetError("no training clips to fit the standardisation on")
    stats = {}
    key = audio_key(features.audio_frontend)
    if features.audio is not None:
        stats[key] = _mean_std(np.concatenate([features.audio[c] for c in train_clips]), (0,))
    if features.pooled is not None:
        stats[key] = _mean_std(np.stack([features.pooled[c] for c in train_clips]), (0,))
    if features.embeddings is not None:
        stats["embedding"] = _mean_std(np.concatenate([features.embeddings[c] for c in train_clips]), (0,))
    if features.segments is not None:
        rows = np.isin(features.segments.clip_ids, list(train_clips))
        audio = features.segments.audio[rows]
        if audio.ndim == 4:  # log-mel images: per channel and mel band
            mean, std = _mean_std(audio, (0, 3))
            stats[key] = (mean[..., None], std[..., None])
        else:
            stats[key] = _mean_std(audio, (0,))
    return Standardization(stats)


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
