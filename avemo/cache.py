"""Per-clip, per-stage results keyed by what produced them: (source sha256, stage parameters, code).

Re-running on an unchanged corpus finds every key and does no work; a new clip has new keys; changing a
parameter changes the keys of exactly the stages that read it. Entries are Arrow IPC files (no pickles),
written atomically, so an interrupted run leaves no half entry behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.feather as feather


def stage_key(stage: str, source_sha256: str, params: dict[str, Any], code: str) -> str:
    payload = json.dumps(
        {"stage": stage, "source": source_sha256, "params": params, "code": code}, sort_keys=True, default=str
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:32]


class StageCache:
    """Named Arrow tables per (stage, key), one folder each, renamed into place once complete."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def _dir(self, stage: str, key: str) -> Path:
        return self.root / stage / key[:2] / key

    def load(self, stage: str, key: str) -> dict[str, pa.Table] | None:
        folder = self._dir(stage, key)
        if not folder.is_dir():
            return None
        return {path.stem: feather.read_table(path, memory_map=False) for path in sorted(folder.glob("*.arrow"))}

    def store(self, stage: str, key: str, tables: dict[str, pa.Table]) -> None:
        folder = self._dir(stage, key)
        folder.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=folder.parent))
        try:
            for name, table in tables.items():
                feather.write_feather(table, tmp / f"{name}.arrow", compression="zstd")
            os.replace(tmp, folder)
        except OSError:
            if folder.is_dir():  # another worker stored the same key first: same inputs, same tables
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
