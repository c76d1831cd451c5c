"""avemo's Parquet files: schema-checked on read, provenance in the footer, written atomically."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from avemo import schemas
from avemo.parquet_io import ParquetSink, read_provenance, read_table, write_table

ROW = {"clip_id": "a", "path": "a.wav", "sha256": None, "stage": "probe", "reason": "the file is empty (0 bytes)"}


def test_a_table_round_trips_with_its_provenance(tmp_path: Path) -> None:
    path = tmp_path / "failures.parquet"
    write_table(pa.Table.from_pylist([ROW]), path, schemas.FAILURES, {"stage": "preprocess", "n": 1})
    assert read_table(path, schemas.FAILURES).to_pylist() == [ROW]
    assert read_provenance(path) == {"stage": "preprocess", "n": 1}
    assert read_table(path, schemas.FAILURES, columns=["reason"]).column_names == ["reason"]


def test_reading_refuses_another_table_or_another_major_version(tmp_path: Path) -> None:
    path = tmp_path / "failures.parquet"
    write_table(pa.Table.from_pylist([ROW]), path, schemas.FAILURES, {})
    with pytest.raises(schemas.SchemaError, match="expected an avemo folds table, found failures"):
        read_table(path, schemas.FOLDS)
    newer = schemas.FAILURES.with_metadata({**schemas.FAILURES.metadata, schemas.SCHEMA_VERSION_KEY: b"2.0"})
    with pytest.raises(schemas.SchemaError, match="failures schema version 2.0 cannot be read by this avemo"):
        schemas.check_schema(newer, schemas.FAILURES, "x.parquet")


def test_a_sink_shows_nothing_until_committed_and_leaves_nothing_when_aborted(tmp_path: Path) -> None:
    path = tmp_path / "failures.parquet"
    sink = ParquetSink(path, schemas.FAILURES)
    sink.write(pa.Table.from_pylist([ROW]))
    assert not path.exists()  # rows so far sit in a temporary file beside it
    sink.commit({"stage": "preprocess"})
    assert sink.rows == 1 and read_table(path, schemas.FAILURES).num_rows == 1
    aborted = ParquetSink(tmp_path / "other.parquet", schemas.FAILURES)
    aborted.write(pa.Table.from_pylist([ROW]))
    aborted.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failures.parquet"]


def test_a_sink_refuses_rows_of_other_columns(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "failures.parquet", schemas.FAILURES)
    with pytest.raises(ValueError, match="columns differ from its schema"):
        sink.write(pa.table({"clip_id": ["a"]}))
    sink.abort()


def test_a_killed_writers_temporary_file_is_removed_by_the_next_writer(tmp_path: Path) -> None:
    """kill -9 mid-write leaves the temporary file; the next sink of that name removes it, and nothing else."""
    target = tmp_path / "clips.parquet"
    script = (
        "import sys, time, pyarrow as pa\n"
        "from avemo.parquet_io import ParquetSink\n"
        f"sink = ParquetSink({str(target)!r}, pa.schema([('x', pa.int32())]))\n"
        "print('writing', flush=True)\n"
        "time.sleep(60)\n"
    )
    writer = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    live = ParquetSink(tmp_path / "segments.parquet", pa.schema([("x", pa.int32())]))  # a live writer's file
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    (left,) = tmp_path.glob(".clips.parquet.*.tmp")
    older = tmp_path / ".clips.parquet.k3j_x9q2.tmp"  # the naming before the writer's pid was in it
    older.write_bytes(b"")
    others = [tmp_path / ".frames.parquet.q1w2e3.tmp", tmp_path / ".clips.parquet.notes.txt", tmp_path / "a.tmp"]
    for other in others:
        other.write_bytes(b"")

    sink = ParquetSink(target, pa.schema([("x", pa.int32())]))
    assert not left.exists() and not older.exists()
    assert all(other.exists() for other in others)
    assert len(list(tmp_path.glob(".segments.parquet.*.tmp"))) == 1  # its writer is alive: kept
    sink.abort()
    live.abort()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in others)
