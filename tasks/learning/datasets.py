"""Standardised torch datasets over loaded features, their batches, and training-time masking.

* :class:`ClipDataset` (FBP family, baselines): one item per clip; :func:`collate_clips` pads each
  modality to the batch's longest clip and keeps the lengths, which the models mask with.
* :class:`SegmentDataset` (AVEF): one item per 655 ms segment, its log-mel image and its face crops
  (3, frames, S, S) in [0, 1], labelled with its clip's class; clip decisions come later from the
  segments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from models.registry import InputKind
from tasks.learning.features import DatasetError, Features, TaskLabels
from tasks.learning.standardization import Standardizer, audio_key, per_clip_standardization


@dataclass(frozen=True)
class ClipBatch:
    audio: Tensor | None  # (B, T, bins) zero-padded (zero = the training mean after standardisation)
    audio_lengths: Tensor | None  # (B,)
    video: Tensor | None  # (B, L, D) zero-padded
    video_lengths: Tensor | None
    labels: Tensor  # (B,)
    clip_ids: list[str]

    def inputs(self, device: torch.device | str) -> dict[str, Tensor]:
        """Keyword arguments for a clip model: only the modalities loaded."""
        names = ("audio", "audio_lengths", "video", "video_lengths")
        return {n: getattr(self, n).to(device) for n in names if getattr(self, n) is not None}


@dataclass(frozen=True)
class SegmentBatch:
    audio: Tensor | None  # (B, 3, 64, 64)
    video: Tensor | None  # (B, 3, 16, S, S) in [0, 1]
    labels: Tensor
    clip_ids: list[str]
    segments: list[int]

    def inputs(self, device: torch.device | str) -> dict[str, Tensor]:
        return {n: getattr(self, n).to(device) for n in ("audio", "video") if getattr(self, n) is not None}


def _check_clips(features: Features, labels: TaskLabels, clip_ids: Sequence[str]) -> list[str]:
    unknown = [c for c in clip_ids if c not in set(features.clip_ids)]
    if unknown:
        raise DatasetError(
            f"{len(unknown)} clips are not in the loaded features (e.g. {unknown[:3]}); they failed preprocessing "
            "or have no face frames for a video model: build the folds from the loaded features' clips"
        )
    unlabelled = [c for c in clip_ids if c not in labels.index]
    if unlabelled:
        raise DatasetError(
            f"{len(unlabelled)} clips have no {labels.task} label (e.g. {unlabelled[:3]}); "
            "pass labels.labelled(clip_ids)"
        )
    return list(clip_ids)


@dataclass(frozen=True)
class Masking:
    """SpecAugment-style masking (Park et al. 2019) of a training item: one block of up to ``bands``
    adjacent mel bands (or spectrogram bins) and one of up to ``frames`` adjacent frames set to zero,
    the training mean after standardisation. Each epoch sees another variant of every item, which
    small corpora of few speakers need against over-fitting."""

    bands: int
    frames: int
    seed: int = 0

    def __post_init__(self) -> None:
        if self.bands < 0 or self.frames < 0:
            raise DatasetError(f"mask sizes must be 0 or more, got bands={self.bands}, frames={self.frames}")

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def apply(self, x: np.ndarray, band_axis: int, frame_axis: int, rng: np.random.Generator) -> np.ndarray:
        x = x.copy()
        for axis, widest in ((band_axis, self.bands), (frame_axis, self.frames)):
            width = int(rng.integers(0, min(widest, x.shape[axis]) + 1))
            start = int(rng.integers(0, x.shape[axis] - width + 1))
            index = [slice(None)] * x.ndim
            index[axis] = slice(start, start + width)
            x[tuple(index)] = 0.0
        return x


class ClipDataset(Dataset):
    """One item per clip: standardised spectrogram and/or embeddings, and the class index.

    ``needs`` picks the modalities to give (default: every one loaded). ``min_frames`` pads a
    spectrogram shorter than the audio encoder's receptive field with zeros (the training mean), so a
    very short voiced clip is still classified rather than rejected. ``masking`` (training only)
    masks the spectrogram.
    """

    def __init__(
        self,
        features: Features,
        labels: TaskLabels,
        clip_ids: Sequence[str],
        standardization: Standardizer,
        needs: Iterable[str] | None = None,
        min_frames: int = 1,
        masking: Masking | None = None,
    ) -> None:
        self.clip_ids = _check_clips(features, labels, clip_ids)
        self.masking = masking
        self._rng = masking.rng() if masking else None
        self.labels = np.array([labels.index[c] for c in self.clip_ids], dtype=np.int64)
        needs = features.loaded if needs is None else frozenset(needs)
        self.audio = features.audio if "audio" in needs else None
        self.embeddings = features.embeddings if "video" in needs else None
        if (self.audio is None and "audio" in needs) or (self.embeddings is None and "video" in needs):
            raise DatasetError(f"the features were loaded without some of {sorted(needs)}; load them with these needs")
        self.standardization = per_clip_standardization(features, self.clip_ids, standardization)
        self.audio_key = audio_key(features.audio_frontend)
        self.min_frames = min_frames

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, np.ndarray | None, int, str]:
        clip = self.clip_ids[i]
        audio = video = None
        if self.audio is not None:
            audio = self.standardization[clip].apply(self.audio_key, self.audio[clip])
            if self.masking is not None:
                assert self._rng is not None  # made with the masking
                audio = self.masking.apply(audio, band_axis=1, frame_axis=0, rng=self._rng)
            if len(audio) < self.min_frames:
                audio = np.pad(audio, ((0, self.min_frames - len(audio)), (0, 0)))
        if self.embeddings is not None:
            video = self.standardization[clip].apply("embedding", self.embeddings[clip])
        return audio, video, int(self.labels[i]), clip


def _pad(arrays: list[np.ndarray]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(a) for a in arrays], dtype=torch.int64)
    out = torch.zeros(len(arrays), int(lengths.max()), arrays[0].shape[1], dtype=torch.float32)
    for row, a in enumerate(arrays):
        out[row, : len(a)] = torch.from_numpy(a)
    return out, lengths


def collate_clips(
    items: list[tuple[np.ndarray | None, np.ndarray | None, int, str]],
) -> ClipBatch:
    """Pad each modality to the batch's longest clip; the lengths tell the models where padding starts."""
    audio, video, labels, clips = zip(*items, strict=True)
    audio_t, audio_len = _pad(list(audio)) if audio[0] is not None else (None, None)
    video_t, video_len = _pad(list(video)) if video[0] is not None else (None, None)
    return ClipBatch(
        audio_t,
        audio_len,
        video_t,
        video_len,
        torch.tensor(labels, dtype=torch.int64),
        list(clips),
    )


class SegmentDataset(Dataset):
    """One item per kept segment of the given clips, labelled with its clip's class."""

    def __init__(
        self,
        features: Features,
        labels: TaskLabels,
        clip_ids: Sequence[str],
        standardization: Standardizer,
        needs: Iterable[str] | None = None,
        masking: Masking | None = None,
    ) -> None:
        self.clip_ids = _check_clips(features, labels, clip_ids)
        self.masking = masking
        self._rng = masking.rng() if masking else None
        if features.segments is None:
            raise DatasetError("these features were loaded for clip models; load them with kind='segment'")
        needs = features.loaded if needs is None else frozenset(needs)
        self.arrays = features.segments
        self.rows = np.flatnonzero(np.isin(self.arrays.clip_ids, self.clip_ids))
        self.labels = np.array([labels.index[c] for c in self.arrays.clip_ids[self.rows]], dtype=np.int64)
        self.standardization = per_clip_standardization(features, self.clip_ids, standardization)
        self.audio_key = audio_key(features.audio_frontend)
        self.with_audio = "audio" in needs
        self.with_video = "video" in needs
        if self.with_video and self.arrays.crops is None:
            raise DatasetError("the segments were loaded without face crops; load them with needs including video")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, np.ndarray | None, int, str, int]:
        row = self.rows[i]
        clip = str(self.arrays.clip_ids[row])
        audio = self.standardization[clip].apply(self.audio_key, self.arrays.audio[row]) if self.with_audio else None
        if audio is not None and self.masking is not None and audio.ndim == 3:  # images, not vectors
            assert self._rng is not None  # made with the masking
            audio = self.masking.apply(audio, band_axis=1, frame_axis=2, rng=self._rng)
        video = None
        if self.with_video:
            assert self.arrays.crops is not None and self.arrays.face_rows is not None  # checked in __init__
            # (16, S, S, 3) uint8 -> (3, 16, S, S) float in [0, 1], C3D's layout
            video = self.arrays.crops[self.arrays.face_rows[row]].transpose(3, 0, 1, 2).astype(np.float32) / 255.0
        return audio, video, int(self.labels[i]), clip, int(self.arrays.segments[row])


def collate_segments(
    items: list[tuple[np.ndarray | None, np.ndarray | None, int, str, int]],
) -> SegmentBatch:
    audio, video, labels, clips, segments = zip(*items, strict=True)
    return SegmentBatch(
        torch.from_numpy(np.stack(audio)) if audio[0] is not None else None,
        torch.from_numpy(np.stack(video)) if video[0] is not None else None,
        torch.tensor(labels, dtype=torch.int64),
        list(clips),
        list(segments),
    )


@dataclass(frozen=True)
class PooledBatch:
    audio: Tensor  # (B, P) standardised front-end vectors
    labels: Tensor
    clip_ids: list[str]

    def inputs(self, device: torch.device | str) -> dict[str, Tensor]:
        return {"audio": self.audio.to(device)}


class PooledDataset(Dataset):
    """One item per clip: its front-end's standardised clip vector (the classical systems' input)."""

    def __init__(
        self, features: Features, labels: TaskLabels, clip_ids: Sequence[str], standardization: Standardizer
    ) -> None:
        self.clip_ids = _check_clips(features, labels, clip_ids)
        if features.pooled is None:
            raise DatasetError("these features were loaded for another kind of model; load them with kind='pooled'")
        self.pooled = features.pooled
        self.labels = np.array([labels.index[c] for c in self.clip_ids], dtype=np.int64)
        self.standardization = per_clip_standardization(features, self.clip_ids, standardization)
        self.audio_key = audio_key(features.audio_frontend)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int, str]:
        clip = self.clip_ids[i]
        return self.standardization[clip].apply(self.audio_key, self.pooled[clip]), int(self.labels[i]), clip

    def matrix(self) -> tuple[np.ndarray, np.ndarray]:
        """(clips, P) standardised vectors and their class indices: what a classical classifier fits on."""
        if not self.clip_ids:
            return np.zeros((0, 0), np.float32), self.labels
        return np.stack([self[i][0] for i in range(len(self))]), self.labels


def collate_pooled(items: list[tuple[np.ndarray, int, str]]) -> PooledBatch:
    vectors, labels, clips = zip(*items, strict=True)
    return PooledBatch(torch.from_numpy(np.stack(vectors)), torch.tensor(labels, dtype=torch.int64), list(clips))


AnyDataset = ClipDataset | SegmentDataset | PooledDataset


def make_dataset(
    features: Features,
    labels: TaskLabels,
    clip_ids: Sequence[str],
    standardization: Standardizer,
    needs: Iterable[str] | None = None,
    min_frames: int = 1,
    masking: Masking | None = None,
) -> AnyDataset:
    """The dataset of the features' input kind, giving the modalities ``needs`` names."""
    if features.kind == "pooled":
        return PooledDataset(features, labels, clip_ids, standardization)
    if features.kind == "segment":
        return SegmentDataset(features, labels, clip_ids, standardization, needs, masking)
    return ClipDataset(features, labels, clip_ids, standardization, needs, min_frames, masking)


def collate_for(kind: InputKind) -> Callable[[list[Any]], Any]:
    collates: dict[str, Callable[[list[Any]], Any]] = {
        "segment": collate_segments,
        "clip": collate_clips,
        "pooled": collate_pooled,
    }
    return collates[kind]
