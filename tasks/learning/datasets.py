"""Features on disk -> labelled, standardised torch datasets for one fold's clips.

Two views of one corpus:

* clip level (FBP family, baselines): a clip's linear spectrogram (T, 200) and its distinct face
  embeddings in time order (L, D); :func:`collate_clips` pads each to the batch's longest and keeps
  the lengths, which the models mask with.
* segment level (AVEF): one 655 ms segment's log-mel image (3, 64, 64) and its 16 face crops
  (3, 16, S, S) in [0, 1], with the clip's label; clip decisions are made later from the segments.

Standardisation statistics are fitted on a fold's training clips only (a test clip must not shape the
features it is scored on) and travel with the checkpoint as plain lists, so prediction reuses them.
Speaker normalisation instead standardises every speaker on its own clips, labels unused, so a test
speaker's statistics come from its own unlabelled clips (:func:`speaker_standardization`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch import Tensor
from torch.utils.data import Dataset

from avemo import schemas
from avemo.parquet_io import read_table
from models.registry import MODALITIES, InputKind, ModalityError
from tasks.learning.metrics import binary_task_labels

Task = Literal["emotion", "arousal", "valence"]
TASKS: tuple[str, ...] = ("emotion", "arousal", "valence")
# A bin, band or dimension that never varies in the training clips is centred but not scaled: dividing
# by a near-zero std would blow up whatever a test clip puts there.
MIN_STD = 1e-6


class DatasetError(ValueError):
    """A features folder, clip list or task that cannot give a dataset."""


@dataclass(frozen=True)
class SegmentArrays:
    """Every kept segment of the loaded clips, row-aligned."""

    clip_ids: np.ndarray  # (N,) str
    segments: np.ndarray  # (N,) int, the segment's index within its clip
    log_mel: np.ndarray  # (N, 3, mel bands, frames) float32: [static, delta, delta2] first
    face_rows: np.ndarray | None  # (N, 16) rows of ``crops``; None when video was not loaded
    crops: np.ndarray | None  # (M, S, S, 3) uint8 face crops of every referenced frame


@dataclass(frozen=True)
class Features:
    """A corpus's features as far as one model needs them: clip metadata plus its input kind's arrays."""

    clip_ids: tuple[str, ...]
    speakers: tuple[str, ...]
    emotions: tuple[str, ...]  # canonical label per clip
    modalities: frozenset[str]  # what the folder offers: "audio", and "video" when faces were found
    kind: InputKind
    dropped: dict[str, int]  # reason -> clips left out (e.g. no face frames for a video model)
    spectrograms: dict[str, np.ndarray] | None = None  # clip -> (T, bins), clip kind with audio
    embeddings: dict[str, np.ndarray] | None = None  # clip -> (L, D), clip kind with video
    segments: SegmentArrays | None = None  # segment kind

    @property
    def loaded(self) -> frozenset[str]:
        """The modalities whose arrays were read: those the loading model needs, not all available."""
        if self.segments is not None:
            return frozenset({"audio", *(["video"] if self.segments.crops is not None else [])})
        return frozenset(m for m, arrays in (("audio", self.spectrograms), ("video", self.embeddings)) if arrays is not None)


def available_modalities(features_dir: Path) -> frozenset[str]:
    """Modalities the folder holds, read from the clip table's flags alone (cheap: no feature columns)."""
    clips = _read(features_dir, "clips.parquet", ["has_video"])
    frames_path = Path(features_dir) / "frames.parquet"
    has_frames = frames_path.exists() and pq.ParquetFile(frames_path).metadata.num_rows > 0
    has_video = has_frames and any(clips["has_video"].to_pylist())
    return frozenset({"audio", "video"} if has_video else {"audio"})


# read_table checks a file's schema name and major version; the sizes given here do not matter.
_SCHEMAS = {
    "clips.parquet": schemas.clips_schema(0),
    "segments.parquet": schemas.segments_schema(0, 0, 0),
    "frames.parquet": schemas.frames_schema(0, 0),
}


def _read(features_dir: Path, name: str, columns: list[str]) -> pa.Table:
    path = Path(features_dir) / name
    if not path.exists():
        raise DatasetError(f"{path} not found: run `avemo preprocess` to write the features folder first")
    return read_table(path, _SCHEMAS[name], columns=columns)


def load_features(features_dir: Path, needs: Iterable[str], kind: InputKind = "clip") -> Features:
    """Read the columns a model of input ``kind`` needing modalities ``needs`` reads, and nothing more.

    Raises :class:`ModalityError` before reading any feature column when a needed modality is absent.
    With video needed, clips without face frames cannot be used and are left out (counted in ``dropped``).
    """
    features_dir = Path(features_dir)
    needs = frozenset(needs)
    modalities = available_modalities(features_dir)
    missing = [m for m in MODALITIES if m in needs - modalities]
    if missing:
        raise ModalityError(
            f"{features_dir} has no {' or '.join(missing)} features (audio only corpus or no face found); "
            "choose a model that needs audio only, e.g. 'audio' or 'avef_audio'"
        )
    meta = _read(features_dir, "clips.parquet", ["clip_id", "speaker", "label", "has_video", "n_face_frames"]).to_pydict()
    with_faces = [video and n > 0 for video, n in zip(meta["has_video"], meta["n_face_frames"])]
    keep = [i for i, faces in enumerate(with_faces) if faces or "video" not in needs]
    dropped = {"no face frames": len(meta["clip_id"]) - len(keep)} if len(keep) < len(meta["clip_id"]) else {}
    clip_ids = tuple(meta["clip_id"][i] for i in keep)
    common = dict(
        clip_ids=clip_ids,
        speakers=tuple(meta["speaker"][i] for i in keep),
        emotions=tuple(meta["label"][i] for i in keep),
        modalities=modalities,
        kind=kind,
        dropped=dropped,
    )
    wanted = set(clip_ids)
    if kind == "clip":
        return Features(
            **common,
            spectrograms=_spectrograms(features_dir, wanted) if "audio" in needs else None,
            embeddings=_embeddings(features_dir, wanted) if "video" in needs else None,
        )
    if kind == "segment":
        return Features(**common, segments=_segments(features_dir, wanted, "video" in needs))
    raise DatasetError(f"unknown input kind {kind!r}; use 'clip' or 'segment'")


def _spectrograms(features_dir: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    table = _read(features_dir, "clips.parquet", ["clip_id", "linear_spectrogram"])
    out = {}
    for batch in table.to_batches():
        column = batch.column("linear_spectrogram")
        offsets = column.offsets.to_numpy()
        rows = column.values  # FixedSizeListArray: one spectrogram frame per row
        frames = rows.flatten().to_numpy().reshape(len(rows), rows.type.list_size)
        for i, clip in enumerate(batch.column("clip_id").to_pylist()):
            if clip in wanted:
                out[clip] = frames[offsets[i] : offsets[i + 1]].astype(np.float32)
    return out


def _frames(features_dir: Path, wanted: set[str], columns: list[str]) -> pa.Table:
    table = _read(features_dir, "frames.parquet", ["clip_id", "frame_index", *columns])
    table = table.filter(pc.is_in(table["clip_id"], pa.array(sorted(wanted))))
    return table.sort_by([("clip_id", "ascending"), ("frame_index", "ascending")])


def _embeddings(features_dir: Path, wanted: set[str]) -> dict[str, np.ndarray]:
    """Each clip's distinct face-frame embeddings in time order: the video stream's input."""
    table = _frames(features_dir, wanted, ["embedding"])
    column = table["embedding"].combine_chunks()
    matrix = column.flatten().to_numpy().reshape(len(column), column.type.list_size).astype(np.float32)
    clips = np.asarray(table["clip_id"].to_pylist())
    return {clip: matrix[clips == clip] for clip in dict.fromkeys(clips.tolist())}


def _segments(features_dir: Path, wanted: set[str], with_video: bool) -> SegmentArrays:
    columns = ["clip_id", "segment", "log_mel", *(["face_frames"] if with_video else [])]
    table = _read(features_dir, "segments.parquet", columns)
    table = table.filter(pc.is_in(table["clip_id"], pa.array(sorted(wanted))))
    clip_ids = np.asarray(table["clip_id"].to_pylist(), dtype=object)
    # Stored as mel band x frame x channel; the CNNs want channels first.
    log_mel = np.ascontiguousarray(table["log_mel"].combine_chunks().to_numpy_ndarray().transpose(0, 3, 1, 2))
    face_rows = crops = None
    if with_video:
        frames = _frames(features_dir, wanted, ["crop"])
        crops = frames["crop"].combine_chunks().to_numpy_ndarray()
        row_of = {key: row for row, key in enumerate(zip(frames["clip_id"].to_pylist(), frames["frame_index"].to_pylist()))}
        try:
            face_rows = np.array(
                [[row_of[(clip, index)] for index in indices] for clip, indices in zip(clip_ids, table["face_frames"].to_pylist())],
                dtype=np.int64,
            )
        except (KeyError, TypeError) as err:
            raise DatasetError(
                f"{features_dir}: a segment refers to a face frame missing from frames.parquet ({err}); "
                "re-run `avemo preprocess` so both files come from one run"
            ) from err
    return SegmentArrays(
        clip_ids=clip_ids,
        segments=np.asarray(table["segment"].to_numpy(), dtype=np.int64),
        log_mel=log_mel.astype(np.float32, copy=False),
        face_rows=face_rows,
        crops=crops,
    )


@dataclass(frozen=True)
class TaskLabels:
    """The classes of a task and each usable clip's class index."""

    task: str
    classes: tuple[str, ...]
    index: dict[str, int]  # clip_id -> class index; clips the task cannot label are absent
    dropped: dict[str, int]  # emotion -> clips without a label in this task

    def labelled(self, clip_ids: Iterable[str]) -> list[str]:
        """The clips of ``clip_ids`` this task labels, in the given order."""
        return [clip for clip in clip_ids if clip in self.index]


def task_labels(features: Features, task: Task) -> TaskLabels:
    """Classes of the whole corpus (not of a fold, so every fold scores the same class list).

    ``emotion``: the sorted canonical emotions present; ``arousal``/``valence``: the AVEF paper's binary
    mapping, dropping (and counting) the clips whose emotion it does not cover, e.g. neutral.
    """
    if task == "emotion":
        classes = tuple(sorted(set(features.emotions)))
        return TaskLabels(task, classes, {c: classes.index(e) for c, e in zip(features.clip_ids, features.emotions)}, {})
    if task in ("arousal", "valence"):
        binary = binary_task_labels(features.emotions, task)
        index = {features.clip_ids[k]: int(label) for k, label in zip(binary.kept, binary.labels)}
        return TaskLabels(task, binary.classes, index, binary.dropped)
    raise DatasetError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")


@dataclass(frozen=True)
class Standardization:
    """Per-feature mean and std fitted on training clips: name -> (mean, std), broadcastable arrays.

    Names: ``spectrogram`` (bins,), ``log_mel`` (3, bands, 1), ``embedding`` (D,).
    """

    stats: dict[str, tuple[np.ndarray, np.ndarray]]

    def apply(self, name: str, x: np.ndarray) -> np.ndarray:
        mean, std = self.stats[name]
        return ((x - mean) / std).astype(np.float32)

    def to_json(self) -> dict[str, dict[str, list]]:
        return {name: {"mean": mean.tolist(), "std": std.tolist()} for name, (mean, std) in self.stats.items()}

    @classmethod
    def from_json(cls, doc: dict[str, dict[str, list]]) -> Standardization:
        return cls({name: (np.asarray(v["mean"], np.float32), np.asarray(v["std"], np.float32)) for name, v in doc.items()})


def _mean_std(x: np.ndarray, axis: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=axis, dtype=np.float64)
    std = x.std(axis=axis, dtype=np.float64)
    return mean.astype(np.float32), np.where(std < MIN_STD, 1.0, std).astype(np.float32)


def fit_standardization(features: Features, train_clips: Sequence[str]) -> Standardization:
    """Statistics of every loaded feature over the training clips only."""
    if not train_clips:
        raise DatasetError("no training clips to fit the standardisation on")
    stats = {}
    if features.spectrograms is not None:
        stats["spectrogram"] = _mean_std(np.concatenate([features.spectrograms[c] for c in train_clips]), (0,))
    if features.embeddings is not None:
        stats["embedding"] = _mean_std(np.concatenate([features.embeddings[c] for c in train_clips]), (0,))
    if features.segments is not None:
        rows = np.isin(features.segments.clip_ids, list(train_clips))
        mean, std = _mean_std(features.segments.log_mel[rows], (0, 3))  # per channel and mel band
        stats["log_mel"] = (mean[..., None], std[..., None])
    return Standardization(stats)


def speaker_standardization(features: Features, clip_ids: Sequence[str]) -> dict[str, Standardization]:
    """One standardisation per speaker, each fitted on that speaker's clips among ``clip_ids``.

    Speaker normalisation: removing each voice's own level and spread leaves less speaker and more
    emotion in the features. It needs no labels, so a test speaker's statistics come from its own
    clips at prediction time.
    """
    speaker_of = dict(zip(features.clip_ids, features.speakers))
    by_speaker: dict[str, list[str]] = {}
    for clip in clip_ids:
        by_speaker.setdefault(speaker_of[clip], []).append(clip)
    return {speaker: fit_standardization(features, clips) for speaker, clips in by_speaker.items()}


Standardizer = Standardization | Mapping[str, Standardization]  # one for all clips, or one per speaker


def _per_clip(features: Features, clip_ids: Sequence[str], standardization: Standardizer) -> dict[str, Standardization]:
    if isinstance(standardization, Standardization):
        return dict.fromkeys(clip_ids, standardization)
    speaker_of = dict(zip(features.clip_ids, features.speakers))
    missing = sorted({speaker_of[c] for c in clip_ids} - set(standardization))
    if missing:
        raise DatasetError(f"no standardisation for speakers {missing}; fit one per speaker of the clips given")
    return {clip: standardization[speaker_of[clip]] for clip in clip_ids}


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
        self.spectrograms = features.spectrograms if "audio" in needs else None
        self.embeddings = features.embeddings if "video" in needs else None
        if (self.spectrograms is None and "audio" in needs) or (self.embeddings is None and "video" in needs):
            raise DatasetError(f"the features were loaded without some of {sorted(needs)}; load them with these needs")
        self.standardization = _per_clip(features, self.clip_ids, standardization)
        self.min_frames = min_frames

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, np.ndarray | None, int, str]:
        clip = self.clip_ids[i]
        audio = video = None
        if self.spectrograms is not None:
            audio = self.standardization[clip].apply("spectrogram", self.spectrograms[clip])
            if self.masking is not None:
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


def collate_clips(items: list[tuple[np.ndarray | None, np.ndarray | None, int, str]]) -> ClipBatch:
    """Pad each modality to the batch's longest clip; the lengths tell the models where padding starts."""
    audio, video, labels, clips = zip(*items)
    audio_t, audio_len = _pad(list(audio)) if audio[0] is not None else (None, None)
    video_t, video_len = _pad(list(video)) if video[0] is not None else (None, None)
    return ClipBatch(audio_t, audio_len, video_t, video_len, torch.tensor(labels, dtype=torch.int64), list(clips))


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
        self.standardization = _per_clip(features, self.clip_ids, standardization)
        self.with_audio = "audio" in needs
        self.with_video = "video" in needs
        if self.with_video and self.arrays.crops is None:
            raise DatasetError("the segments were loaded without face crops; load them with needs including video")

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[np.ndarray | None, np.ndarray | None, int, str, int]:
        row = self.rows[i]
        clip = str(self.arrays.clip_ids[row])
        audio = self.standardization[clip].apply("log_mel", self.arrays.log_mel[row]) if self.with_audio else None
        if audio is not None and self.masking is not None:
            audio = self.masking.apply(audio, band_axis=1, frame_axis=2, rng=self._rng)
        video = None
        if self.with_video:
            # (16, S, S, 3) uint8 -> (3, 16, S, S) float in [0, 1], C3D's layout
            video = self.arrays.crops[self.arrays.face_rows[row]].transpose(3, 0, 1, 2).astype(np.float32) / 255.0
        return audio, video, int(self.labels[i]), clip, int(self.arrays.segments[row])


def collate_segments(items: list[tuple[np.ndarray | None, np.ndarray | None, int, str, int]]) -> SegmentBatch:
    audio, video, labels, clips, segments = zip(*items)
    return SegmentBatch(
        torch.from_numpy(np.stack(audio)) if audio[0] is not None else None,
        torch.from_numpy(np.stack(video)) if video[0] is not None else None,
        torch.tensor(labels, dtype=torch.int64),
        list(clips),
        list(segments),
    )


def make_dataset(
    features: Features,
    labels: TaskLabels,
    clip_ids: Sequence[str],
    standardization: Standardizer,
    needs: Iterable[str] | None = None,
    min_frames: int = 1,
    masking: Masking | None = None,
) -> ClipDataset | SegmentDataset:
    """The dataset of the features' input kind, giving the modalities ``needs`` names."""
    if features.kind == "segment":
        return SegmentDataset(features, labels, clip_ids, standardization, needs, masking)
    return ClipDataset(features, labels, clip_ids, standardization, needs, min_frames, masking)


def collate_for(kind: InputKind):
    return collate_segments if kind == "segment" else collate_clips


