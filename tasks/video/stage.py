"""The video stages of a clip: ``faces`` (MTCNN tracks and crops of the frames its kept segments need,
and each segment's frames by AVEF's rule) and ``face_features`` (an expression embedding per crop)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from avemo.config import PreprocessParams
from avemo.schemas import fixed_size_rows, tensor_column
from tasks.demux import DemuxError
from tasks.probe import MediaInfo
from tasks.stage import StageError, Tables
from tasks.video import FaceError
from tasks.video.embeddings import FaceEmbedder
from tasks.video.faces import FaceDetector, detect_clip_faces


def compute_faces(
    file: Path, info: MediaInfo, segments: pa.Table, params: PreprocessParams, detector: FaceDetector
) -> Tables:
    """Per-frame face tracks and crops of the frames the kept segments need, and each segment's frames."""
    spans = [_Span(b, e) for b, e in zip(segments["t_begin"].to_pylist(), segments["t_end"].to_pylist(), strict=True)]
    try:
        faces = detect_clip_faces(file, info, spans, detector, params.faces, params.audio.ffmpeg)
    except (FaceError, DemuxError) as err:
        raise StageError("faces", str(err)) from err
    order = sorted(faces.tracks)
    tracks = [faces.tracks[i] for i in order]
    fps = info.video_fps
    assert fps is not None  # detect_clip_faces refuses a video without a rate
    found = [not t.no_face for t in tracks]
    frames = pa.table(
        {
            "frame_index": pa.array(order, pa.int32()),
            "t": pa.array([i / fps for i in order], pa.float64()),
            "box": pa.array(
                [list(t.box) if f else None for t, f in zip(tracks, found, strict=True)], pa.list_(pa.float32(), 4)
            ),
            "probability": pa.array(
                [t.probability if f else None for t, f in zip(tracks, found, strict=True)], pa.float32()
            ),
            "landmarks": pa.array(
                [t.landmarks.reshape(-1).tolist() if f else None for t, f in zip(tracks, found, strict=True)],
                pa.list_(pa.float32(), 10),
            ),
            "detected": pa.array([t.detected for t in tracks], pa.bool_()),
            "no_face": pa.array([t.no_face for t in tracks], pa.bool_()),
            "multiple_faces": pa.array([t.multiple_faces for t in tracks], pa.bool_()),
            "crop": tensor_column(np.stack([faces.crops[i] for i in order])),
        }
    )
    per_segment = pa.table(
        {"face_frames": pa.array(faces.segment_frames, pa.list_(pa.int32(), params.faces.frames_per_segment))}
    )
    decode = pa.table({"decode_errors": pa.array([faces.decode_errors], pa.int32())})
    return {"frames": frames, "segment_faces": per_segment, "decode": decode}


def compute_face_features(frames: pa.Table, embedder: FaceEmbedder) -> Tables:
    crops = frames["crop"].combine_chunks().to_numpy_ndarray()
    try:
        embeddings = embedder(crops)
    except RuntimeError as err:
        raise StageError("face_features", f"{embedder.name} embedding failed: {err}") from err
    return {"embeddings": pa.table({"embedding": fixed_size_rows(embeddings.astype(np.float32), embedder.dim)})}


@dataclass(frozen=True)
class _Span:
    t_begin: float
    t_end: float
