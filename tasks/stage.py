"""What a per-clip stage gives: its Arrow tables, or a :class:`StageError` naming the stage and why.

A stage raises for a bad clip instead of returning half a result; the clip chain (``tasks.clip``) turns
the error into a row of ``failures.parquet``, so one bad clip never stops a corpus and none is dropped
silently.
"""

from __future__ import annotations

import pyarrow as pa

Tables = dict[str, pa.Table]  # a stage's result: named tables, cached together


class StageError(Exception):
    """The clip cannot pass ``stage``; ``reason`` says why in words a user can act on."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason
