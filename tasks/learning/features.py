"""Features on disk -> the arrays one model reads, and the labels of a task.

Two views of one corpus, by the model's input kind:

* clip level (FBP family, baselines): a clip's linear spectrogram (T, bins) and its distinct face
  embeddings in time order (L, D);
* segment level (AVEF): every kept 655 ms segment's log-mel image and the rows of its face crops.

Only the columns the model needs are read; a needed modality the folder lacks is refused before any
feature column is read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from avemo import schemas
from avemo.errors import AvemoError
from avemo.labels import binary_task_labels
from avemo.parquet_io import read_table
from models.registry import MODALITIES, PAPER_FRONTENDS, InputKind, InputShapes, ModalityError

Task = Literal["emotion", "arousal", "valence"]


TASKS: tuple[str, ...] = ("emotion", "arousal", "valence")


class DatasetError(AvemoError):
    """A features folder, clip list or task that cannot give a dataset."""


@dataclass(frozen=True)
class SegmentArrays:
    """Every kept segment of the loaded clips, row-aligned."""

    clip_ids: np.ndarray  # (N,) str
    segments: np.ndarray  # (N,) int, the segment's index within its clip
    audio: np.ndarray  # (N, 3, mel bands, frames) log-mel images, [static, delta, delta2] first; or (N, P)
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
    audio: dict[str, np.ndarray] | None = None  # clip -> (T, D) audio steps (spectrogram frames, ...), clip kind
    embeddings: dict[str, np.ndarray] | None = None  # clip -> (L, D), clip kind with video
    segments: SegmentArrays | None = None  # segment kind
    pooled: dict[str, np.ndarray] | None = None  # clip -> (P,) the front-end's clip vector, pooled kind
    pooled_views: dict[str, np.ndarray] | None = None  # clip -> (V, P) its vectors at other speeds, pooled kind
    audio_blocks: tuple[int, ...] | None = None  # pooled from several front-ends ("a+b"): each one's width
    frontend: str = ""  # the audio front-end the arrays come from; "": the kind's paper front-end

    @property
    def audio_frontend(self) -> str:
        return self.frontend or PAPER_FRONTENDS[self.kind]

    @property
    def loaded(self) -> frozenset[str]:
        """The modalities whose arrays were read: those the loading model needs, not all available."""
        if self.pooled is not None:
            return frozenset({"audio"})
        if self.segments is not None:
            return frozenset({"audio", *(["video"] if self.segments.crops is not None else [])})
        return frozenset(m for m, arrays in (("audio", self.audio), ("video", self.embeddings)) if arrays is not None)

    @property
    def shapes(self) -> InputShapes:
        """The loaded arrays' sizes, which a model is built for: they come from the Parquet columns'
        fixed shapes, so changing, say, ``faces.crop_size`` needs no second setting anywhere."""
        frontend = self.audio_frontend
        if self.pooled is not None:
            first_pooled = next(iter(self.pooled.values()), None)
            width = first_pooled.shape[0] if first_pooled is not None else None
            return InputShapes(audio_frontend=frontend, audio_dim=width, audio_blocks=self.audio_blocks)
        if self.segments is not None:
            audio, crops, rows = self.segments.audio, self.segments.crops, self.segments.face_rows
            images = audio.ndim == 4
            return InputShapes(
                mel_bands=audio.shape[2] if images else None,
                segment_frames=audio.shape[3] if images else None,
                faces_per_segment=rows.shape[1] if rows is not None else None,
                crop_size=crops.shape[1] if crops is not None else None,
                audio_frontend=frontend,
                audio_dim=None if images else audio.shape[1],
            )
        first = next(iter(self.embeddings.values()), None) if self.embeddings is not None else None
        steps = next(iter(self.audio.values()), None) if self.audio is not None else None
        return InputShapes(
            embedding_dim=first.shape[1] if first is not None else None,
            audio_frontend=frontend,
            audio_dim=steps.shape[1] if steps is not None else None,
        )


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


def load_features(
    features_dir: Path, needs: Iterable[str], kind: InputKind = "clip", frontend: str | None = None
) -> Features:
    """Read the columns a model of input ``kind`` needing modalities ``needs`` reads, and nothing more.

    ``frontend``: the audio front-end to read (default: the kind's paper front-end, ``linear`` for clip
    models, ``logmel`` for segment models); a pretrained one comes from ``frontend_NAME.parquet``: its
    per-segment vectors, as a sequence for clip models and one per segment for segment models, or its
    clip vector for pooled models. Raises :class:`ModalityError` before reading any feature column when a
    needed modality is absent. With video needed, clips without face frames cannot be used and are left
    out (counted in ``dropped``).
    """
    features_dir = Path(features_dir)
    needs = frozenset(needs)
    frontend = frontend or PAPER_FRONTENDS[kind]
    modalities = available_modalities(features_dir)
    missing = [m for m in MODALITIES if m in needs - modalities]
    if missing:
        raise ModalityError(
            f"{features_dir} has no {' or '.join(missing)} features (audio only corpus or no face found); "
            "choose a model that needs audio only, e.g. 'audio' or 'avef_audio'"
        )
    meta = _read(
        features_dir,
        "clips.parquet",
        ["clip_id", "speaker", "label", "has_video", "n_face_frames"],
    ).to_pydict()
    with_faces = [video and n > 0 for video, n in zip(meta["has_video"], meta["n_face_frames"], strict=True)]
    keep = [i for i, faces in enumerate(with_faces) if faces or "video" not in needs]
    dropped = {"no face frames": len(meta["clip_id"]) - len(keep)} if len(keep) < len(meta["clip_id"]) else {}
    clip_ids = tuple(meta["clip_id"][i] for i in keep)
    common: dict[str, Any] = dict(
        clip_ids=clip_ids,
        speakers=tuple(meta["speaker"][i] for i in keep),
        emotions=tuple(meta["label"][i] for i in keep),
        modalities=modalities,
        kind=kind,
        dropped=dropped,
        frontend=frontend,
    )
    wanted = set(clip_ids)
    if kind == "clip":
        audio = None
        if "audio" in needs:
            audio = (
                _spectrograms(features_dir, wanted)
                if frontend == "linear"
                else _sequences(features_dir, frontend, wanted)
            )
        return Features(
            **common, audio=audio, embeddings=_embeddings(features_dir, wanted) if "video" in needs else None
        )
    if kind == "segment":
        return Features(**common, segments=_segments(features_dir, wanted, "video" in needs, frontend))
    if kind == "pooled":
        parts = [_pooled(features_dir, name, wanted) for name in frontend.split("+")]
        if len(parts) == 1:
            return Features(**common, pooled=parts[0][0], pooled_views=parts[0][1])
        pooled = {c: np.concatenate([p[c] for p, _ in parts]) for c in clip_ids}
        views = {c: np.concatenate([v[c] for _, v in parts], axis=1) for c in clip_ids}
        blocks = tuple(len(next(iter(p.values()))) for p, _ in parts)
        return Features(**common, pooled=pooled, pooled_views=views, audio_blocks=blocks)
    raise DatasetError(f"unknown input kind {kind!r}; use 'clip', 'segment' or 'pooled'")


def _frontend_table(features_dir: Path, frontend: str, columns: list[str]) -> pa.Table:
    path = Path(features_dir) / f"frontend_{frontend}.parquet"
    if not path.exists():
        raise DatasetError(
            f"{features_dir} has no {frontend} front-end ({path.name}): add {frontend} to preprocess.frontends "
            "and run `avemo preprocess` again (the other stages come from its cache)"
        )
    return read_table(path, schemas.frontend_schema(frontend, 0, 0), columns=["clip_id", *columns])


def _nested_rows(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list<fixed_size_list<float>> column as (offsets per row, one matrix of all inner vectors)."""
    array = column.combine_chunks()
    vectors = array.values
    width = vectors.type.list_size
    return array.offsets.to_numpy(), vectors.flatten().to_numpy(zero_copy_only=False).reshape(len(vectors), width)


def _sequences(features_dir: Path, frontend: str, wanted: set[str]) -> dict[str, np.ndarray]:
    """Each clip's per-segment vectors of the front-end, in time order: a clip model's audio steps."""
    table = _frontend_table(features_dir, frontend, ["segment_pooled"])
    offsets, vectors = _nested_rows(table["segment_pooled"])
    return {
        clip: vectors[offsets[i] : offsets[i + 1]].astype(np.float32)
        for i, clip in enumerate(table["clip_id"].to_pylist())
        if clip in wanted
    }


def _pooled(features_dir: Path, frontend: str, wanted: set[str]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each clip's vector, and its vectors at the preprocess's perturbed speeds ((0, P) without)."""
    table = _frontend_table(features_dir, frontend, ["clip_pooled", "perturbed_clip_pooled"])
    column = table["clip_pooled"].combine_chunks()
    matrix = column.flatten().to_numpy(zero_copy_only=False).reshape(len(column), -1).astype(np.float32)
    offsets, views = _nested_rows(table["perturbed_clip_pooled"])
    views = views.astype(np.float32)
    clips = table["clip_id"].to_pylist()
    pooled = {clip: matrix[i] for i, clip in enumerate(clips) if clip in wanted}
    return pooled, {clip: views[offsets[i] : offsets[i + 1]] for i, clip in enumerate(clips) if clip in wanted}


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


def _segment_vectors(features_dir: Path, frontend: str, clip_ids: np.ndarray, segments: np.ndarray) -> np.ndarray:
    """(N, P) the front-end's vector of each segment row (clip, segment index among the clip's kept ones)."""
    sequences = _sequences(features_dir, frontend, set(clip_ids.tolist()))
    try:
        return np.stack([sequences[clip][index] for clip, index in zip(clip_ids, segments, strict=True)])
    except (KeyError, IndexError) as err:
        raise DatasetError(
            f"{features_dir}: frontend_{frontend}.parquet lacks a segment of segments.parquet ({err}); "
            "re-run `avemo preprocess` so both files come from one run"
        ) from err


def _face_rows(features_dir: Path, wanted: set[str], table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each segment's rows of the crops, and the crops of every frame a segment refers to."""
    frames = _frames(features_dir, wanted, ["crop"])
    crops = frames["crop"].combine_chunks().to_numpy_ndarray()
    row_of = {
        key: row
        for row, key in enumerate(zip(frames["clip_id"].to_pylist(), frames["frame_index"].to_pylist(), strict=True))
    }
    try:
        face_rows = np.array(
            [
                [row_of[(clip, index)] for index in indices]
                for clip, indices in zip(table["clip_id"].to_pylist(), table["face_frames"].to_pylist(), strict=True)
            ],
            dtype=np.int64,
        )
    except (KeyError, TypeError) as err:
        raise DatasetError(
            f"{features_dir}: a segment refers to a face frame missing from frames.parquet ({err}); "
            "re-run `avemo preprocess` so both files come from one run"
        ) from err
    return face_rows, crops


def _segments(features_dir: Path, wanted: set[str], with_video: bool, frontend: str) -> SegmentArrays:
    columns = [
        "clip_id",
        "segment",
        *(["log_mel"] if frontend == "logmel" else []),
        *(["face_frames"] if with_video else []),
    ]
    table = _read(features_dir, "segments.parquet", columns)
    table = table.filter(pc.is_in(table["clip_id"], pa.array(sorted(wanted))))
    clip_ids = np.asarray(table["clip_id"].to_pylist(), dtype=object)
    segments = np.asarray(table["segment"].to_numpy(), dtype=np.int64)
    if frontend == "logmel":  # stored as mel band x frame x channel; the CNNs want channels first
        audio = np.ascontiguousarray(table["log_mel"].combine_chunks().to_numpy_ndarray().transpose(0, 3, 1, 2))
    else:
        audio = _segment_vectors(features_dir, frontend, clip_ids, segments)
    face_rows, crops = _face_rows(features_dir, wanted, table) if with_video else (None, None)
    return SegmentArrays(clip_ids, segments, audio.astype(np.float32, copy=False), face_rows, crops)


@dataclass(frozen=True)
class TaskLabels:
    """The classes of a task and each usable clip's class index."""

    task: Task
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
        return TaskLabels(
            task,
            classes,
            {c: classes.index(e) for c, e in zip(features.clip_ids, features.emotions, strict=True)},
            {},
        )
    if task in ("arousal", "valence"):
        binary = binary_task_labels(features.emotions, task)
        index = {features.clip_ids[k]: int(label) for k, label in zip(binary.kept, binary.labels, strict=True)}
        return TaskLabels(task, binary.classes, index, binary.dropped)
    raise DatasetError(f"unknown task {task!r}; use one of {', '.join(TASKS)}")
