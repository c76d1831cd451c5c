"""The per-clip stages of preprocessing, cache-aware and free of Prefect (``flows/preprocess.py`` maps them).

A clip passes three cached stages, each keyed by (source sha256, the parameters it reads, its code):

* ``audio``: demux -> VAD -> 655 ms segmentation -> pre-emphasis -> log-mel images and the FBP
  spectrogram. Reads ``audio``, ``vad``, ``segment``, ``audio_features``.
* ``faces``: MTCNN on the frames of the kept segments, crops, the 16 frames of each segment. Reads
  ``audio``, ``vad``, ``segment`` (they fix the segments) and ``faces``.
* ``face_features``: an expression embedding per crop. Reads what ``faces`` reads and ``face_features``.

A stage never raises for a bad clip: it returns a ``StageFailure`` naming the stage and the reason, and
later stages pass it on, so one bad clip never stops a corpus and none is dropped silently.
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from avemo.cache import StageCache, stage_key
from avemo.config import PreprocessParams
from avemo.provenance import code_version
from tasks.audio.preemphasis import pre_emphasis
from tasks.audio.segment import segment_clip
from tasks.audio.spectrograms import linear_spectrogram, log_mel_frames, segment_log_mel
from tasks.audio.vad import vad_decisions
from tasks.demux import DemuxError, load_audio
from tasks.probe import MediaInfo
from tasks.video import FaceError
from tasks.video.embeddings import FaceEmbedder, load_face_embedder
from tasks.video.faces import FaceDetector, detect_clip_faces

# The modules whose code shapes each stage's result: editing one invalidates that stage's cache.
AUDIO_CODE = ("tasks.clip", "tasks.demux", "tasks.audio.vad", "tasks.audio.segment", "tasks.audio.preemphasis", "tasks.audio.spectrograms")
FACES_CODE = ("tasks.clip", "tasks.demux", "tasks.audio.vad", "tasks.audio.segment", "tasks.video.faces")
FACE_FEATURES_CODE = (*FACES_CODE, "tasks.video.embeddings")

Tables = dict[str, pa.Table]


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


def _keys(params: PreprocessParams, source: ClipSource, embedder: FaceEmbedder | None = None) -> dict[str, str]:
    audio_chain = params.model_dump(include={"audio", "vad", "segment"}, mode="json")
    audio = {**audio_chain, **params.model_dump(include={"audio_features"}, mode="json")}
    faces = {**audio_chain, **params.model_dump(include={"faces"}, mode="json")}
    keys = {
        "audio": stage_key("audio", source.sha256, audio, code_version(*AUDIO_CODE)),
        "faces": stage_key("faces", source.sha256, faces, code_version(*FACES_CODE)),
    }
    if embedder is not None:
        features = {**faces, "extractor": embedder.name, "weights_sha256": embedder.weights_sha256}
        keys["face_features"] = stage_key("face_features", source.sha256, features, code_version(*FACE_FEATURES_CODE))
    return keys


def _cached(cache: StageCache, stage: str, key: str, compute) -> StageResult | StageFailure:
    hit = cache.load(stage, key)
    if hit is not None:
        return StageResult(hit, 0.0, True)
    start = time.perf_counter()
    outcome = compute()
    if isinstance(outcome, StageFailure):
        return outcome
    cache.store(stage, key, outcome)
    return StageResult(outcome, time.perf_counter() - start, False)


def _fail(source: ClipSource, stage: str, reason: str) -> StageFailure:
    return StageFailure(source.clip_id, source.path, source.sha256, stage, reason)


def compute_audio(source: ClipSource, params: PreprocessParams) -> Tables | StageFailure:
    """Segments with their log-mel images, and the clip's FBP spectrogram and voiced share."""
    if not source.info.has_audio:
        return _fail(source, "demux", "no audio stream: avemo segments clips on speech, so it needs audio")
    rate = params.audio.sample_rate
    try:
        signal = load_audio(source.file, rate)
    except DemuxError as err:
        return _fail(source, "demux", str(err))
    duration = signal.size / rate
    if signal.size == 0:
        return _fail(source, "demux", "the audio stream decodes to no samples (truncated or empty)")
    voiced = vad_decisions(signal, rate, params.vad)
    segments = segment_clip(signal.size, rate, voiced, params.vad.frame_ms, params.segment)
    if not segments:
        seg = params.segment
        if duration < seg.duration_s:
            reason = f"the clip's audio lasts {duration:.3f} s, shorter than one {seg.duration_s * 1000:.0f} ms segment"
        else:
            reason = (
                f"no segment has a voiced share >= {seg.min_voiced_share} (VAD finds {voiced.mean():.0%} of the "
                f"clip voiced): silent or non-speech audio"
            )
        return _fail(source, "segment", reason)
    emphasised = pre_emphasis(signal, params.audio.pre_emphasis)
    mel = log_mel_frames(emphasised, rate, params.segment, params.audio_features)
    images = np.stack([segment_log_mel(mel, s, params.segment, params.audio_features) for s in segments])
    times, spectrogram = linear_spectrogram(emphasised, rate, segments, params.segment, params.audio_features)
    segment_table = pa.table(
        {
            "segment": pa.array([s.index for s in segments], pa.int32()),
            "first_frame": pa.array([s.first_frame for s in segments], pa.int32()),
            "t_begin": pa.array([s.t_begin for s in segments], pa.float64()),
            "t_end": pa.array([s.t_end for s in segments], pa.float64()),
            "voiced_share": pa.array([s.voiced_share for s in segments], pa.float32()),
            "log_mel": _tensor_column(images),
        }
    )
    bins = params.audio_features.linear_bins
    clip_table = pa.table(
        {
            "duration_s": pa.array([duration], pa.float64()),
            "voiced_share": pa.array([float(voiced.mean())], pa.float32()),
            "linear_times": pa.array([times.astype(np.float32)], pa.list_(pa.float32())),
            "linear_spectrogram": pa.ListArray.from_arrays(
                pa.array([0, len(spectrogram)], pa.int32()), _fixed_rows(spectrogram, bins)
            ),
        }
    )
    return {"segments": segment_table, "clip": clip_table}


def compute_faces(
    source: ClipSource, segments: pa.Table, params: PreprocessParams, detector: FaceDetector
) -> Tables | StageFailure:
    """Per-frame face tracks and crops of the frames the kept segments need, and each segment's frames."""
    spans = [_Span(b, e) for b, e in zip(segments["t_begin"].to_pylist(), segments["t_end"].to_pylist())]
    try:
        faces = detect_clip_faces(source.file, source.info, spans, detector, params.faces)
    except (FaceError, DemuxError) as err:
        return _fail(source, "faces", str(err))
    order = sorted(faces.tracks)
    tracks = [faces.tracks[i] for i in order]
    fps = source.info.video_fps
    found = [not t.no_face for t in tracks]
    frames = pa.table(
        {
            "frame_index": pa.array(order, pa.int32()),
            "t": pa.array([i / fps for i in order], pa.float64()),
            "box": pa.array([list(t.box) if f else None for t, f in zip(tracks, found)], pa.list_(pa.float32(), 4)),
            "probability": pa.array([t.probability if f else None for t, f in zip(tracks, found)], pa.float32()),
            "landmarks": pa.array(
                [t.landmarks.reshape(-1).tolist() if f else None for t, f in zip(tracks, found)],
                pa.list_(pa.float32(), 10),
            ),
            "detected": pa.array([t.detected for t in tracks], pa.bool_()),
            "no_face": pa.array([t.no_face for t in tracks], pa.bool_()),
            "multiple_faces": pa.array([t.multiple_faces for t in tracks], pa.bool_()),
            "crop": _tensor_column(np.stack([faces.crops[i] for i in order])),
        }
    )
    per_segment = pa.table(
        {"face_frames": pa.array(faces.segment_frames, pa.list_(pa.int32(), params.faces.frames_per_segment))}
    )
    return {"frames": frames, "segment_faces": per_segment}


def compute_face_features(source: ClipSource, frames: pa.Table, embedder: FaceEmbedder) -> Tables | StageFailure:
    crops = frames["crop"].combine_chunks().to_numpy_ndarray()
    try:
        embeddings = embedder(crops)
    except RuntimeError as err:
        return _fail(source, "face_features", f"{embedder.name} embedding failed: {err}")
    return {"embeddings": pa.table({"embedding": _fixed_rows(embeddings.astype(np.float32), embedder.dim)})}


def _tensor_column(batch: np.ndarray) -> pa.FixedShapeTensorArray:
    """(n, *shape) -> a fixed-shape tensor column in row-major layout, the one the schemas declare."""
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(batch))


def _fixed_rows(matrix: np.ndarray, width: int) -> pa.FixedSizeListArray:
    """An (n, width) float32 matrix as n fixed-size list values, without a Python loop."""
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), width)


@dataclass(frozen=True)
class _Span:
    t_begin: float
    t_end: float


# One detector and one embedder per process: building them loads weights, and both are thread-safe
# for inference (no state changes between calls).
_models_lock = threading.Lock()


@functools.cache
def _detector() -> FaceDetector:
    return FaceDetector()


@functools.cache
def _embedder(extractor: str, weights_path: str | None, batch_size: int) -> FaceEmbedder:
    from avemo.config import FaceFeatureParams

    return load_face_embedder(
        FaceFeatureParams(extractor=extractor, weights_path=weights_path, batch_size=batch_size)
    )


def face_models(params: PreprocessParams) -> tuple[FaceDetector, FaceEmbedder]:
    ff = params.face_features
    with _models_lock:
        return _detector(), _embedder(ff.extractor, str(ff.weights_path) if ff.weights_path else None, ff.batch_size)


def run_audio(source: ClipSource, params: PreprocessParams, cache: StageCache) -> StageResult | StageFailure:
    return _cached(cache, "audio", _keys(params, source)["audio"], lambda: compute_audio(source, params))


def run_faces(
    source: ClipSource, audio: StageResult | StageFailure, params: PreprocessParams, cache: StageCache
) -> StageResult | StageFailure | None:
    """None for an audio-only clip: it gets audio features and no faces, which is not a failure."""
    if isinstance(audio, StageFailure) or not source.info.has_video:
        return audio if isinstance(audio, StageFailure) else None
    detector, _ = face_models(params)
    segments = audio.tables["segments"]
    return _cached(
        cache, "faces", _keys(params, source)["faces"], lambda: compute_faces(source, segments, params, detector)
    )


def run_face_features(
    source: ClipSource, faces: StageResult | StageFailure | None, params: PreprocessParams, cache: StageCache
) -> StageResult | StageFailure | None:
    if faces is None or isinstance(faces, StageFailure):
        return faces
    _, embedder = face_models(params)
    frames = faces.tables["frames"]
    key = _keys(params, source, embedder)["face_features"]
    return _cached(cache, "face_features", key, lambda: compute_face_features(source, frames, embedder))


@dataclass(frozen=True)
class ClipFeatures:
    """Everything one clip contributes to the output files, and how long each stage took."""

    clip: dict[str, Any]
    segments: pa.Table
    frames: pa.Table | None
    seconds: dict[str, float]
    cached: dict[str, bool]


def assemble(
    source: ClipSource,
    audio: StageResult | StageFailure,
    faces: StageResult | StageFailure | None,
    features: StageResult | StageFailure | None,
    params: PreprocessParams,
) -> ClipFeatures | StageFailure:
    """Join a clip's stage results into its rows of clips, segments and frames."""
    for outcome in (audio, faces, features):
        if isinstance(outcome, StageFailure):
            return outcome
    segments = audio.tables["segments"]
    n = segments.num_rows
    clip_id = pa.array([source.clip_id] * n, pa.string())
    frames = None
    if faces is None:
        face_frames = pa.nulls(n, pa.list_(pa.int32(), params.faces.frames_per_segment))
        n_no_face = n_multiple = pa.nulls(n, pa.int32())
        counts = (0, 0, 0)
    else:
        frames_table = faces.tables["frames"]
        face_frames = faces.tables["segment_faces"]["face_frames"]
        flags = {
            i: (nf, mf)
            for i, nf, mf in zip(
                frames_table["frame_index"].to_pylist(),
                frames_table["no_face"].to_pylist(),
                frames_table["multiple_faces"].to_pylist(),
            )
        }
        per_segment = face_frames.to_pylist()
        n_no_face = pa.array([sum(flags[i][0] for i in fr) for fr in per_segment], pa.int32())
        n_multiple = pa.array([sum(flags[i][1] for i in fr) for fr in per_segment], pa.int32())
        frames = frames_table.add_column(0, "clip_id", pa.array([source.clip_id] * frames_table.num_rows))
        frames = frames.append_column("embedding", features.tables["embeddings"]["embedding"])
        no_face = frames_table["no_face"].to_pylist()
        multiple = frames_table["multiple_faces"].to_pylist()
        counts = (frames_table.num_rows, sum(no_face), sum(multiple))
    segment_rows = pa.table(
        {
            "clip_id": clip_id,
            **{name: segments[name] for name in ("segment", "first_frame", "t_begin", "t_end", "voiced_share", "log_mel")},
            "face_frames": face_frames,
            "n_no_face": n_no_face,
            "n_multiple_faces": n_multiple,
        }
    )
    clip_info = audio.tables["clip"].to_pylist()[0]
    clip = {
        "clip_id": source.clip_id,
        "path": source.path,
        "sha256": source.sha256,
        "corpus": source.corpus,
        "speaker": source.speaker,
        "label": source.label,
        "corpus_label": source.corpus_label,
        "duration_s": clip_info["duration_s"],
        "voiced_share": clip_info["voiced_share"],
        "n_segments": n,
        "has_video": faces is not None,
        "video_fps": source.info.video_fps if faces is not None else None,
        "n_face_frames": counts[0],
        "n_no_face_frames": counts[1],
        "n_multiple_face_frames": counts[2],
        "linear_times": clip_info["linear_times"],
        "linear_spectrogram": clip_info["linear_spectrogram"],
    }
    stages = {"audio": audio, "faces": faces, "face_features": features}
    seconds = {name: r.seconds for name, r in stages.items() if r is not None}
    cached = {name: r.cached for name, r in stages.items() if r is not None}
    return ClipFeatures(clip, segment_rows, frames, seconds, cached)
