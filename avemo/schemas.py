"""Versioned Arrow schemas of every Parquet file avemo writes: the contracts downstream code reads.

A schema's version goes up whenever a column is added, removed or changes meaning; readers check it
(``check_schema``) and refuse files written under another major version. docs/outputs.md documents
every column listed here.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from avemo.errors import AvemoError

SCHEMA_NAME_KEY = b"avemo.schema"
SCHEMA_VERSION_KEY = b"avemo.schema_version"


class SchemaError(AvemoError):
    """A Parquet file is not the avemo table a reader expected."""


def _versioned(name: str, version: str, fields: list[pa.Field]) -> pa.Schema:
    return pa.schema(fields, metadata={SCHEMA_NAME_KEY: name.encode(), SCHEMA_VERSION_KEY: version.encode()})


MANIFEST = _versioned(
    "manifest",
    "1.0",
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),  # relative to the corpus folder
        pa.field("corpus", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("label", pa.string(), nullable=False),  # one of avemo.labels.EMOTIONS
        pa.field("corpus_label", pa.string(), nullable=False),  # the corpus's own label
        pa.field("sentence", pa.string()),
        pa.field("intensity", pa.string()),
        pa.field("sha256", pa.string(), nullable=False),
        pa.field("size_bytes", pa.int64(), nullable=False),
        pa.field("duration_s", pa.float64()),
        pa.field("audio_sample_rate", pa.int32()),
        pa.field("audio_channels", pa.int32()),
        pa.field("audio_codec", pa.string()),
        pa.field("video_fps", pa.float64()),
        pa.field("video_width", pa.int32()),
        pa.field("video_height", pa.int32()),
        pa.field("video_codec", pa.string()),
        pa.field("probe_error", pa.string()),  # why the file could not be probed, else null
    ],
)


def check_schema(schema: pa.Schema, expected: pa.Schema, source: str) -> None:
    """Refuse a file that is not the expected avemo table or was written under another major version."""
    meta = schema.metadata or {}
    name = meta.get(SCHEMA_NAME_KEY, b"").decode()
    version = meta.get(SCHEMA_VERSION_KEY, b"").decode()
    want_name = expected.metadata[SCHEMA_NAME_KEY].decode()
    want_version = expected.metadata[SCHEMA_VERSION_KEY].decode()
    if name != want_name:
        raise SchemaError(f"{source}: expected an avemo {want_name} table, found {name or 'no avemo schema'}")
    if version.split(".")[0] != want_version.split(".")[0]:
        raise SchemaError(
            f"{source}: {name} schema version {version} cannot be read by this avemo "
            f"(reads {want_version}); re-run the stage that wrote it"
        )


FAILURES = _versioned(
    "failures",
    "1.0",
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("sha256", pa.string()),
        pa.field("stage", pa.string(), nullable=False),  # probe, demux, vad, segment, faces, face_features
        pa.field("reason", pa.string(), nullable=False),
    ],
)


def clips_schema(linear_bins: int) -> pa.Schema:
    """One row per clip that gave features; the FBP audio stream's spectrogram is per clip."""
    return _versioned(
        "clips",
        "1.1",
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("path", pa.string(), nullable=False),
            pa.field("sha256", pa.string(), nullable=False),
            pa.field("corpus", pa.string(), nullable=False),
            pa.field("speaker", pa.string(), nullable=False),
            pa.field("label", pa.string(), nullable=False),
            pa.field("corpus_label", pa.string(), nullable=False),
            pa.field("duration_s", pa.float64(), nullable=False),  # of the decoded audio
            pa.field("voiced_share", pa.float32(), nullable=False),  # VAD frames voiced / all
            pa.field("n_segments", pa.int32(), nullable=False),  # kept segments
            pa.field("has_video", pa.bool_(), nullable=False),
            pa.field("video_fps", pa.float64()),
            pa.field("n_face_frames", pa.int32(), nullable=False),  # distinct frames in frames.parquet
            pa.field("n_no_face_frames", pa.int32(), nullable=False),
            pa.field("n_multiple_face_frames", pa.int32(), nullable=False),
            pa.field("decode_errors", pa.int32(), nullable=False),  # errors ffmpeg logged decoding; 0: clean
            pa.field("linear_times", pa.list_(pa.float32()), nullable=False),  # frame centres, s
            pa.field("linear_spectrogram", pa.list_(pa.list_(pa.float32(), linear_bins)), nullable=False),
        ],
    )


def segments_schema(n_mels: int, frames: int, faces_per_segment: int) -> pa.Schema:
    """One row per kept 655 ms segment: the AVEF inputs, with face frames referenced in frames.parquet."""
    return _versioned(
        "segments",
        "1.0",
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("segment", pa.int32(), nullable=False),  # 0.. among the clip's kept segments
            pa.field("first_frame", pa.int32(), nullable=False),  # first 10 ms analysis frame
            pa.field("t_begin", pa.float64(), nullable=False),  # seconds, original clip time
            pa.field("t_end", pa.float64(), nullable=False),
            pa.field("voiced_share", pa.float32(), nullable=False),
            pa.field("log_mel", pa.fixed_shape_tensor(pa.float32(), [n_mels, frames, 3]), nullable=False),
            pa.field("face_frames", pa.list_(pa.int32(), faces_per_segment)),  # null: audio only
            pa.field("n_no_face", pa.int32()),  # of the referenced frames
            pa.field("n_multiple_faces", pa.int32()),
        ],
    )


def frames_schema(crop_size: int, embedding_dim: int) -> pa.Schema:
    """One row per distinct video frame any segment references: detection, crop and embedding."""
    return _versioned(
        "frames",
        "1.0",
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("frame_index", pa.int32(), nullable=False),  # at the video's native rate, from 0
            pa.field("t", pa.float64(), nullable=False),
            pa.field("box", pa.list_(pa.float32(), 4)),  # x1, y1, x2, y2 in source pixels; null: no face
            pa.field("probability", pa.float32()),
            pa.field("landmarks", pa.list_(pa.float32(), 10)),  # 5 (x, y) points
            pa.field("detected", pa.bool_(), nullable=False),  # MTCNN ran here (else interpolated)
            pa.field("no_face", pa.bool_(), nullable=False),  # crop is the whole frame
            pa.field("multiple_faces", pa.bool_(), nullable=False),
            pa.field("crop", pa.fixed_shape_tensor(pa.uint8(), [crop_size, crop_size, 3]), nullable=False),
            pa.field("embedding", pa.list_(pa.float32(), embedding_dim), nullable=False),
        ],
    )


FRONTEND_KEY = b"avemo.frontend"


def frontend_schema(name: str, frame_dim: int, pooled_dim: int) -> pa.Schema:
    """One row per clip of a pretrained audio front-end (``frontend_NAME.parquet``): its frames over the
    whole clip, a pooled vector per kept segment (in segments.parquet's order) and one for the clip."""
    schema = _versioned(
        "frontend",
        "1.0",
        [
            pa.field("clip_id", pa.string(), nullable=False),
            pa.field("frame_times", pa.list_(pa.float32()), nullable=False),  # frame centres, s
            pa.field("frames", pa.list_(pa.list_(pa.float32(), frame_dim)), nullable=False),
            pa.field("segment_pooled", pa.list_(pa.list_(pa.float32(), pooled_dim)), nullable=False),
            pa.field("clip_pooled", pa.list_(pa.float32(), pooled_dim), nullable=False),
            # the clip vector of the clip played faster or slower, one per preprocess.speed_perturbation
            pa.field("perturbed_clip_pooled", pa.list_(pa.list_(pa.float32(), pooled_dim)), nullable=False),
        ],
    )
    return schema.with_metadata({**schema.metadata, FRONTEND_KEY: name.encode()})


FOLDS = _versioned(
    "folds",
    "1.0",
    [
        pa.field("fold", pa.string(), nullable=False),
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("speaker", pa.string(), nullable=False),
        pa.field("role", pa.string(), nullable=False),  # train, validation or test
    ],
)

PREDICTIONS = _versioned(
    "predictions",
    "1.0",
    [
        pa.field("clip_id", pa.string(), nullable=False),
        pa.field("fold", pa.string(), nullable=False),  # the fold whose test set held the clip
        pa.field("system", pa.string(), nullable=False),
        pa.field("true", pa.string(), nullable=False),
        pa.field("predicted", pa.string(), nullable=False),
        pa.field("probabilities", pa.list_(pa.float32()), nullable=False),  # in the task's class order
    ],
)

SEGMENT_PREDICTIONS = _versioned(
    "segment_predictions",
    "1.0",
    [
        PREDICTIONS.field(0),
        pa.field("segment", pa.int32(), nullable=False),
        *[PREDICTIONS.field(i) for i in range(1, 6)],
    ],
)


def tensor_column(batch: np.ndarray) -> pa.FixedShapeTensorArray:
    """(n, *shape) -> a fixed-shape tensor column in row-major layout, the one the schemas declare."""
    return pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(batch))


def fixed_size_rows(matrix: np.ndarray, width: int) -> pa.FixedSizeListArray:
    """An (n, width) float32 matrix as n fixed-size list values, without a Python loop."""
    return pa.FixedSizeListArray.from_arrays(pa.array(matrix.reshape(-1), pa.float32()), width)
