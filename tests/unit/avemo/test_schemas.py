"""The versioned schemas: their names and versions, and the tensor layouts feature columns are built in."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from avemo import schemas


def test_every_schema_names_itself_and_its_version() -> None:
    tables = {
        "manifest": schemas.MANIFEST,
        "failures": schemas.FAILURES,
        "clips": schemas.clips_schema(200),
        "segments": schemas.segments_schema(64, 64, 16),
        "frames": schemas.frames_schema(48, 304),
        "folds": schemas.FOLDS,
        "predictions": schemas.PREDICTIONS,
        "segment_predictions": schemas.SEGMENT_PREDICTIONS,
    }
    versions = {"clips": b"1.1"}  # decode_errors added
    for name, schema in tables.items():
        assert schema.metadata[schemas.SCHEMA_NAME_KEY] == name.encode()
        assert schema.metadata[schemas.SCHEMA_VERSION_KEY] == versions.get(name, b"1.0")


def test_feature_shapes_are_the_column_types() -> None:
    segments = schemas.segments_schema(64, 64, 20)
    assert segments.field("log_mel").type.shape == [64, 64, 3]
    assert segments.field("face_frames").type.list_size == 20
    frames = schemas.frames_schema(40, 512)
    assert frames.field("crop").type.shape == [40, 40, 3] and frames.field("embedding").type.list_size == 512


def test_tensor_columns_keep_values_and_row_major_layout() -> None:
    images = np.arange(2 * 3 * 4 * 2, dtype=np.float32).reshape(2, 3, 4, 2)
    column = schemas.tensor_column(images)
    assert column.type.shape == [3, 4, 2]
    np.testing.assert_array_equal(column.to_numpy_ndarray(), images)
    rows = schemas.fixed_size_rows(np.arange(6, dtype=np.float32).reshape(3, 2), 2)
    assert rows.type == pa.list_(pa.float32(), 2) and rows.to_pylist() == [[0, 1], [2, 3], [4, 5]]
