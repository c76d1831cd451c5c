"""Write and read avemo's Parquet files: schema checked, provenance attached, written atomically.

A reader never sees a half-written file: rows go to a temporary file in the same folder, renamed over
the target only once complete. Rows can be appended clip by clip, so a large corpus's features never
have to sit in memory at once; provenance, known only at the end, goes into the footer.

A temporary file is named ``.NAME.HOST.PID.RANDOM.tmp``; a run killed before it committed leaves it behind,
and the next writer of NAME removes those whose process on this host is gone (and those of the older
``.NAME.RANDOM.tmp`` naming), never a live writer's or another file's.
"""

from __future__ import annotations

import glob
import logging
import os
import socket
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from avemo.provenance import PROVENANCE_KEY, decode, encode
from avemo.schemas import check_schema

logger = logging.getLogger(__name__)
_HOST = socket.gethostname().replace("/", "_")


class ParquetSink:
    """Append tables of one schema; ``commit`` attaches provenance and moves the file into place."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = Path(path)
        self.schema = schema
        self.rows = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.path)
        prefix = f".{self.path.name}.{_HOST}.{os.getpid()}."
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=self.path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_name, 0o666 & ~umask)  # mkstemp's 0600 would hide outputs from a team's other users
        self._tmp = Path(tmp_name)
        self._writer = pq.ParquetWriter(self._tmp, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.column_names != self.schema.names:
            missing = set(self.schema.names) - set(table.column_names)
            extra = set(table.column_names) - set(self.schema.names)
            raise ValueError(f"{self.path.name}: columns differ from its schema (missing {missing}, extra {extra})")
        self._writer.write_table(table.cast(self.schema))
        self.rows += table.num_rows

    def commit(self, provenance: dict[str, Any]) -> None:
        self._writer.add_key_value_metadata({PROVENANCE_KEY.decode(): encode(provenance).decode()})
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._writer.close()
        self._tmp.unlink(missing_ok=True)


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Remove the temporary files of writers of ``path`` that died before committing; the files removed."""
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        parts = candidate.name[len(path.name) + 2 : -len(".tmp")].split(".")
        if len(parts) >= 3 and parts[-2].isdigit():  # HOST.PID.RANDOM (a host name may hold dots)
            host, pid = ".".join(parts[:-2]), int(parts[-2])
            if host != _HOST or _alive(pid):
                continue
        elif len(parts) != 1:  # not the older .NAME.RANDOM.tmp either: not ours
            continue
        candidate.unlink(missing_ok=True)
        removed.append(candidate)
        logger.info("removed %s, left by an interrupted run", candidate)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def write_table(table: pa.Table, path: Path, schema: pa.Schema, provenance: dict[str, Any]) -> None:
    """Write a whole table at once, atomically, with its provenance."""
    sink = ParquetSink(path, schema)
    try:
        sink.write(table)
    except BaseException:
        sink.abort()
        raise
    sink.commit(provenance)


def read_table(path: Path, expected: pa.Schema, columns: list[str] | None = None) -> pa.Table:
    """Read an avemo Parquet file after checking it is the expected table and version."""
    check_schema(pq.read_schema(path), expected, str(path))
    return pq.read_table(path, columns=columns)


def read_provenance(path: Path) -> dict[str, Any] | None:
    metadata = pq.ParquetFile(path).metadata.metadata or {}
    return decode(metadata.get(PROVENANCE_KEY))
