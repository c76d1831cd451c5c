"""``avemo audit``: where an avemo output came from (``describe``) and whether that still holds (``verify``).

``describe`` reads the record from the artifact itself (``tasks.audit.lineage``); ``verify`` checks it
against the world: it re-hashes every source, compares the file with the md5 ``dvc.lock`` recorded
(``tasks.audit.verify``), and re-computes a seeded sample of rows from the same sources with the recorded
parameters (``tasks.audit.recompute``). Plain functions, not a Prefect flow: an audit runs in one
process, and importing Prefect (or torch, which only re-computing needs) would slow the command's start.
"""

from __future__ import annotations

import time
from pathlib import Path

from tasks.audit.lineage import describe
from tasks.audit.recompute import recompute_sample
from tasks.audit.render import render, render_verification
from tasks.audit.verify import Verification, check_dvc, check_sources, environment_notes

__all__ = ["describe", "render", "render_verification", "verify"]


def verify(
    path: Path | str, sample: int = 3, clip: str | None = None, faces: bool = False, seed: int = 0
) -> Verification:
    """Drift of ``path`` from its record: sources re-hashed, DVC md5, a seeded sample of rows re-computed.

    ``faces`` also re-runs the face stages (MTCNN, several seconds a clip) for clips.parquet and
    segments.parquet; frames.parquet always needs them.
    """
    started = time.perf_counter()
    path = Path(path)
    record = describe(path, clip)
    checked, findings, notes = check_sources(record)
    dvc_findings, dvc_notes = check_dvc(record)
    findings += dvc_findings
    notes += dvc_notes
    changed = {f.clip_id for f in findings if f.kind.startswith("source_")}
    recomputed, columns = recompute_sample(path, record, sample, clip, faces, seed, changed, findings, notes)
    if findings:
        notes += environment_notes(record)
    return Verification(record.path, checked, recomputed, columns, findings, notes, time.perf_counter() - started)
