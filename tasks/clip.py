"""The one per-clip chain: audio -> faces -> face features -> the clip's rows, with each stage cached.

``avemo preprocess`` (with the stage cache), ``avemo predict`` (per window, without it) and
``avemo audit --verify`` (re-computation, without it) all call :func:`clip_features`, so a clip's
features cannot differ between them. Each cached stage is keyed by (source sha256, the parameters it
reads, its code):

Every key also holds the decoder's identity (``avemo.ffmpeg``): a change of ffmpeg recomputes.

* ``audio`` (``tasks.audio.stage``): demux -> VAD -> 655 ms segmentation -> pre-emphasis -> log-mel
  images and the FBP spectrogram. Reads ``audio``, ``vad``, ``segment``, ``audio_features``.
* ``faces`` (``tasks.video.stage``): MTCNN on the frames of the kept segments, crops, each segment's
  frames. Reads ``audio``, ``vad``, ``segment`` (they fix the segments) and ``faces``.
* ``face_features``: an expression embedding per crop. Reads what ``faces`` reads and ``face_features``.
* ``frontend-NAME`` (``tasks.audio.frontends``), for each of ``preprocess.frontends``: openSMILE's or
  Whisper's frames and pooled vectors over the same segments. Reads what ``audio`` reads for the segments,
  ``whisper`` for Whisper, and the tool's identity (openSMILE's release, Whisper's weights' sha256).

A stage that fails gives a :class:`StageFailure` naming the stage and the reason; later stages pass it on.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from avemo import schemas
from avemo.cache import StageCache, stage_key
from avemo.config import FaceFeatureParams, PreprocessParams
from avemo.ffmpeg import decoder
from avemo.parquet_io import read_provenance, read_table
from avemo.provenance import code_version
from tasks.audio.frontends import compute_frontend, tool_identity
from tasks.audio.stage import compute_audio
from tasks.probe import MediaInfo
from tasks.stage import StageError, Tables
from tasks.video.embeddings import FaceEmbedder, load_face_embedder
from tasks.video.faces import FaceDetector
from tasks.video.stage import compute_face_features, compute_faces

# The modules whose code shapes each stage's result: editing one invalidates that stage's cache.
_SEGMENTS_CODE = ("tasks.audio.stage", "tasks.demux", "tasks.audio.vad", "tasks.audio.segment")
AUDIO_CODE = (*_SEGMENTS_CODE, "tasks.audio.preemphasis", "tasks.audio.spectrograms")
FACES_CODE = (
    *_SEGMENTS_CODE,
    "tasks.video.stage",
    "tasks.video.faces",
    "tasks.video.mtcnn",
    "models.mtcnn",
    "tasks.video.frame_rule",
)
FACE_FEATURES_CODE = (*FACES_CODE, "tasks.video.embeddings")
FRONTEND_CODE = {
    "egemaps": (*_SEGMENTS_CODE, "tasks.audio.frontends", "tasks.audio.opensmile_features"),
    "compare": (*_SEGMENTS_CODE, "tasks.audio.frontends", "tasks.audio.opensmile_features"),
    "whisper": (*_SEGMENTS_CODE, "tasks.audio.frontends", "tasks.audio.whisper_encoder"),
}

_MEDIA_FIELDS = [f for f in MediaInfo.__dataclass_fields__]


@dataclass(frozen=True)
class ClipSource:
    """One manifest row, with the file's absolute path: what every stage of the clip starts from."""

    clip_id: str
    path: str  # relative to the corpus folder, as in the manifest
    file: Path
    sha256: str
    corpus: str
    speaker: str
    label: str
    corpus_label: str
    info: MediaInfo


@dataclass(frozen=True)
class StageFailure:
    """A clip that did not pass a stage: a row of ``failures.parquet``."""

    clip_id: str
    path: str
    sha256: str | None
    stage: str
    reason: str


@dataclass(frozen=True)
class StageResult:
    tables: Tables
    seconds: float  # compute time; 0 when read from the cache
    cached: bool


@dataclass(frozen=True)
class ClipFeatures:
    """Everything one clip contributes to the output files, and how long each stage took."""

    clip: dict[str, Any]
    segments: pa.Table
    frames: pa.Table | None
    frontends: dict[str, pa.Table]  # name -> the clip's row of frontend_NAME.parquet
    seconds: dict[str, float]
    cached: dict[str, bool]


def read_sources(manifest: Path) -> tuple[list[ClipSource], list[StageFailure], Path]:
    """The clips of a manifest, the failures already known from probing (kept, never dropped), and the
    corpus folder its paths are relative to."""
    table = read_table(manifest, schemas.MANIFEST)
    prov = read_provenance(manifest) or {}
    corpus_dir = Path(prov.get("corpus_dir", manifest.parent))
    sources, failures = [], []
    for row in table.to_pylist():
        if row["probe_error"]:
            failures.append(StageFailure(row["clip_id"], row["path"], row["sha256"], "probe", row["probe_error"]))
            continue
        sources.append(
            ClipSource(
                clip_id=row["clip_id"],
                path=row["path"],
                file=corpus_dir / row["path"],
                sha256=row["sha256"],
                corpus=row["corpus"],
                speaker=row["speaker"],
                label=row["label"],
                corpus_label=row["corpus_label"],
                info=MediaInfo(**{name: row[name] for name in _MEDIA_FIELDS}),
            )
        )
    return sources, failures, corpus_dir


# One detector and one embedder per process: building them loads weights, and both are thread-safe
# for inference (no state changes between calls).
_models_lock = threading.Lock()


@functools.cache
def _detector() -> FaceDetector:
    return FaceDetector()


@functools.cache
def _embedder(extractor: str, weights_path: str | None, batch_size: int) -> FaceEmbedder:
    # validated from a dict: the cache key keeps the path a str, which pydantic turns back into a Path
    section = {"extractor": extractor, "weights_path": weights_path, "batch_size": batch_size}
    return load_face_embedder(FaceFeatureParams.model_validate(section))


def face_models(params: PreprocessParams) -> tuple[FaceDetector, FaceEmbedder]:
    ff = params.face_features
    with _models_lock:
        return _detector(), _embedder(ff.extractor, str(ff.weights_path) if ff.weights_path else None, ff.batch_size)


def stage_keys(params: PreprocessParams, sha256: str, embedder: FaceEmbedder | None = None) -> dict[str, str]:
    """The cache key of each stage of a clip with this content; ``face_features`` needs the embedder."""
    audio_chain = params.model_dump(include={"audio", "vad", "segment"}, exclude={"audio": {"ffmpeg"}}, mode="json")
    audio_chain["decoder"] = decoder(params.audio.ffmpeg).identity()  # every stage decodes the source
    audio = {**audio_chain, **params.model_dump(include={"audio_features"}, mode="json")}
    faces = {**audio_chain, **params.model_dump(include={"faces"}, mode="json")}
    keys = {
        "audio": stage_key("audio", sha256, audio, code_version(*AUDIO_CODE)),
        "faces": stage_key("faces", sha256, faces, code_version(*FACES_CODE)),
    }
    if embedder is not None:
        features = {**faces, "extractor": embedder.name, "weights_sha256": embedder.weights_sha256}
        keys["face_features"] = stage_key("face_features", sha256, features, code_version(*FACE_FEATURES_CODE))
    for name in params.frontends:
        settings = {**audio_chain, **tool_identity(name, params), "speed_perturbation": params.speed_perturbation}
        if name == "whisper":
            settings["whisper"] = params.whisper.model_dump(include={"pad_to_s", "compute_type"}, mode="json")
        keys[f"frontend-{name}"] = stage_key(f"frontend-{name}", sha256, settings, code_version(*FRONTEND_CODE[name]))
    return keys


def _run(
    source: ClipSource, stage: str, compute: Callable[[], Tables], cache: StageCache | None, key: Callable[[], str]
) -> StageResult | StageFailure:
    """The stage's tables from the cache (when given and holding them), else computed, timed and stored."""
    if cache is not None and (hit := cache.load(stage, key())) is not None:
        return StageResult(hit, 0.0, True)
    started = time.perf_counter()
    try:
        tables = compute()
    except StageError as err:
        return StageFailure(source.clip_id, source.path, source.sha256, err.stage, err.reason)
    if cache is not None:
        cache.store(stage, key(), tables)
    return StageResult(tables, time.perf_counter() - started, False)


def _key_of(keys: Callable[[], dict[str, str]], stage: str) -> str:
    return keys()[stage]


def clip_features(
    source: ClipSource, params: PreprocessParams, *, with_faces: bool = True, cache: StageCache | None = None
) -> ClipFeatures | StageFailure:
    """The clip's rows of clips, segments and frames, or the failure of its first failing stage.

    ``with_faces=False`` (an audio model, an audit without ``--faces``) skips the video stages: the clip
    then gets rows as an audio-only clip does. ``cache`` reads and stores each stage's tables.
    """
    keys = functools.partial(stage_keys, params, source.sha256)
    audio = _run(
        source, "audio", lambda: compute_audio(source.file, source.info, params), cache, lambda: keys()["audio"]
    )
    if isinstance(audio, StageFailure):
        return audio
    segments = audio.tables["segments"]
    frontends: dict[str, StageResult] = {}
    for name in params.frontends:
        stage = f"frontend-{name}"
        result = _run(
            source,
            stage,
            functools.partial(compute_frontend, name, source.file, source.info, segments, params),
            cache,
            functools.partial(_key_of, keys, stage),
        )
        if isinstance(result, StageFailure):
            return result
        frontends[name] = result
    if not (with_faces and source.info.has_video):
        return assemble(source, audio, None, None, frontends, params)
    detector, embedder = face_models(params)
    faces = _run(
        source,
        "faces",
        lambda: compute_faces(source.file, source.info, segments, params, detector),
        cache,
        lambda: keys()["faces"],
    )
    if isinstance(faces, StageFailure):
        return faces
    frames = faces.tables["frames"]
    features = _run(
        source,
        "face_features",
        lambda: compute_face_features(frames, embedder),
        cache,
        lambda: keys(embedder)["face_features"],
    )
    if isinstance(features, StageFailure):
        return features
    return assemble(source, audio, faces, features, frontends, params)


def _face_columns(faces: StageResult, features: StageResult, clip_id: str) -> tuple[pa.Table, dict[str, Any]]:
    """The clip's frames rows (with embeddings), and per segment its face frames and flag counts."""
    frames = faces.tables["frames"]
    face_frames = faces.tables["segment_faces"]["face_frames"]
    no_face = dict(zip(frames["frame_index"].to_pylist(), frames["no_face"].to_pylist(), strict=True))
    multiple = dict(zip(frames["frame_index"].to_pylist(), frames["multiple_faces"].to_pylist(), strict=True))
    per_segment = face_frames.to_pylist()
    rows = frames.add_column(0, "clip_id", pa.array([clip_id] * frames.num_rows))
    rows = rows.append_column("embedding", features.tables["embeddings"]["embedding"])
    columns = {
        "face_frames": face_frames,
        "n_no_face": pa.array([sum(no_face[i] for i in fr) for fr in per_segment], pa.int32()),
        "n_multiple_faces": pa.array([sum(multiple[i] for i in fr) for fr in per_segment], pa.int32()),
    }
    return rows, columns


def _clip_row(source: ClipSource, audio: Tables, segments: int, faces: Tables | None) -> dict[str, Any]:
    """The clip's row of ``clips.parquet``."""
    info = audio["clip"].to_pylist()[0]
    frames = None if faces is None else faces["frames"]
    video_errors = 0 if faces is None else faces["decode"]["decode_errors"][0].as_py()
    return {
        "clip_id": source.clip_id,
        "path": source.path,
        "sha256": source.sha256,
        "corpus": source.corpus,
        "speaker": source.speaker,
        "label": source.label,
        "corpus_label": source.corpus_label,
        "duration_s": info["duration_s"],
        "voiced_share": info["voiced_share"],
        "n_segments": segments,
        "has_video": frames is not None,
        "video_fps": source.info.video_fps if frames is not None else None,
        "n_face_frames": frames.num_rows if frames is not None else 0,
        "n_no_face_frames": sum(frames["no_face"].to_pylist()) if frames is not None else 0,
        "n_multiple_face_frames": sum(frames["multiple_faces"].to_pylist()) if frames is not None else 0,
        "decode_errors": info["decode_errors"] + video_errors,
        "linear_times": info["linear_times"],
        "linear_spectrogram": info["linear_spectrogram"],
    }


def assemble(
    source: ClipSource,
    audio: StageResult,
    faces: StageResult | None,
    features: StageResult | None,
    frontends: dict[str, StageResult],
    params: PreprocessParams,
) -> ClipFeatures:
    """Join a clip's stage results into its rows of clips, segments and frames (no faces: audio only)."""
    segments = audio.tables["segments"]
    n = segments.num_rows
    if faces is None or features is None:
        frames = None
        face_columns = {
            "face_frames": pa.nulls(n, pa.list_(pa.int32(), params.faces.frames_per_segment)),
            "n_no_face": pa.nulls(n, pa.int32()),
            "n_multiple_faces": pa.nulls(n, pa.int32()),
        }
    else:
        frames, face_columns = _face_columns(faces, features, source.clip_id)
    audio_columns = ("segment", "first_frame", "t_begin", "t_end", "voiced_share", "log_mel")
    segment_rows = pa.table(
        {
            "clip_id": pa.array([source.clip_id] * n, pa.string()),
            **{name: segments[name] for name in audio_columns},
            **face_columns,
        }
    )
    stages = {
        "audio": audio,
        "faces": faces,
        "face_features": features,
        **{f"frontend-{k}": v for k, v in frontends.items()},
    }
    seconds = {name: r.seconds for name, r in stages.items() if r is not None}
    cached = {name: r.cached for name, r in stages.items() if r is not None}
    rows = {
        name: result.tables["frontend"].add_column(0, "clip_id", pa.array([source.clip_id], pa.string()))
        for name, result in frontends.items()
    }
    clip = _clip_row(source, audio.tables, n, faces.tables if faces is not None and frames is not None else None)
    return ClipFeatures(clip, segment_rows, frames, rows, seconds, cached)
