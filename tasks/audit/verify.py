"""The checks of ``avemo audit --verify``: does an output's record (``tasks.audit.lineage``) still hold?

``verify`` (``flows.audit``) checks the record against the world: it re-hashes every source, compares
the file with the md5 ``dvc.lock`` recorded, and re-computes a seeded sample of rows from the same sources
with the recorded parameters (``tasks.audit.recompute``). This module holds what a drift is (``Finding``),
the result (``Verification``), the source and DVC checks, and how re-computed rows are sampled and
compared. Each check that could not run is said so in ``Verification.notes``: a clean result never hides
what was skipped.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from avemo.ffmpeg import BUNDLED, DecoderError, decoder
from avemo.provenance import git_commit, tool_versions
from tasks.audit.lineage import AuditRecord
from tasks.probe import sha256_file

# Re-computing on the same inputs is bit-exact for the audio stage; MTCNN's boxes move by ~1e-5 px
# with the thread count, so floats are compared with a relative tolerance far below any real change.
RTOL = 1e-5
ATOL = 1e-6


@dataclass(frozen=True)
class Finding:
    """One drift: which file, what changed, and what to do about it."""

    kind: str  # source_missing, source_changed, recomputed_differs, dvc_changed, upstream_changed
    file: str
    clip_id: str | None
    detail: str
    action: str


@dataclass(frozen=True)
class Verification:
    path: str
    sources_checked: int
    recomputed: list[str]  # clip ids whose rows were re-computed and compared
    recomputed_columns: list[str]
    findings: list[Finding]
    notes: list[str]  # what was not checked, and why; environment differences
    seconds: float

    @property
    def clean(self) -> bool:
        return not self.findings

    def to_json(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "clean": self.clean}


def _rerun_hint(record: AuditRecord) -> str:
    stage = record.dvc.stage if record.dvc else record.stage
    return f"`dvc repro {stage}`" if record.dvc else f"re-run `avemo {stage}`"


def check_sources(record: AuditRecord) -> tuple[int, list[Finding], list[str]]:
    """Re-hash every source the record names: (how many were checked, findings, notes)."""
    findings, notes, checked = [], [], 0
    unplaced = [s.clip_id for s in record.sources if s.file is None]
    if unplaced:
        notes.append(
            f"{len(unplaced)} source(s) could not be located (no manifest row), not re-hashed: "
            f"{', '.join(unplaced[:5])}"
        )
    if not record.sources:
        notes.append("no source hashes are recorded for this file: sources not checked")
    for source in record.sources:
        if source.file is None:
            continue
        checked += 1
        file = Path(source.file)
        if not file.is_file():
            findings.append(
                Finding(
                    "source_missing",
                    source.file,
                    source.clip_id,
                    "the source file is missing",
                    f"restore it (e.g. `dvc checkout`), or rebuild without it: {_rerun_hint(record)}",
                )
            )
        elif (now := sha256_file(file)) != source.sha256:
            findings.append(
                Finding(
                    "source_changed",
                    source.file,
                    source.clip_id,
                    f"sha256 is {now[:16]}…, recorded {source.sha256[:16]}… "
                    f"(the bytes changed since {record.path} was made)",
                    f"restore the original file, or rebuild from the new bytes: {_rerun_hint(record)}",
                )
            )
    return checked, findings, notes


def check_dvc(record: AuditRecord) -> tuple[list[Finding], list[str]]:
    if record.dvc is None:
        return [], ["not a DVC-tracked output (no dvc.lock stage lists it): DVC check skipped"]
    if record.dvc.matches is None:
        return [], [f"dvc.lock stage {record.dvc.stage}: the file's recorded md5 is not in the DVC cache, not compared"]
    if record.dvc.matches:
        return [], []
    return [
        Finding(
            "dvc_changed",
            record.path,
            None,
            f"md5 {record.dvc.current_md5} differs from {record.dvc.recorded_md5} recorded by {record.dvc.lock} "
            f"(stage {record.dvc.stage})",
            f"`dvc checkout {record.dvc.out}` restores the recorded version; "
            f"`dvc repro {record.dvc.stage}` rebuilds it",
        )
    ], []


def decoder_note(record: AuditRecord) -> str | None:
    """The decoder change, when re-computing decodes with another ffmpeg than the one recorded: the cause
    of re-computed differences it comes with (every decoded sample can move)."""
    recorded = record.tools.get("ffmpeg")
    if record.stage != "preprocess" or recorded is None:
        return None
    setting = (record.params.get("audio") or {}).get("ffmpeg", BUNDLED)
    try:
        now = decoder(setting)
    except DecoderError as err:
        return f"the recorded decoder cannot run here: {err}"
    if now.version == recorded:
        return None
    return (
        f"the decoder changed: recorded ffmpeg {recorded}, re-computed with {now.describe()} "
        f"(preprocess.audio.ffmpeg: {setting}); differences in decoded values are expected from it. "
        "Re-run `avemo preprocess` to rebuild every clip with this decoder, or give the recorded one"
    )


def environment_notes(record: AuditRecord) -> list[str]:
    """Where the running avemo and tools differ from those recorded: a cause to suspect for a mismatch."""
    notes = []
    if (decoder_change := decoder_note(record)) is not None:
        notes.append(decoder_change)
    now = git_commit()
    if record.git.get("commit") and now.get("commit") and record.git["commit"] != now["commit"]:
        dirty = " (dirty)" if now.get("dirty") else ""
        notes.append(f"code now at git {now['commit'][:8]}{dirty}, recorded {record.git['commit'][:8]}")
    try:
        tools = tool_versions((record.params.get("audio") or {}).get("ffmpeg", BUNDLED))
    except DecoderError:
        tools = tool_versions()
    changed = [
        f"{name} {tools.get(name)} (recorded {version})"
        for name, version in record.tools.items()
        if tools.get(name) != version
    ]
    if changed:
        notes.append("tool versions now: " + ", ".join(changed))
    return notes


def sample_clips(clip_ids: Iterable[str], n: int, seed: int = 0) -> list[str]:
    """A reproducible sample: the same clips for the same file, n and seed."""
    pool = sorted(set(clip_ids))
    return sorted(random.Random(seed).sample(pool, min(n, len(pool))))


def compare_values(stored: list[Any], fresh: list[Any]) -> str | None:
    """None when two columns agree (floats within RTOL/ATOL), else what differs."""
    if stored == fresh:
        return None
    if len(stored) != len(fresh):
        return f"{len(stored)} stored rows, {len(fresh)} re-computed"
    try:
        a, b = np.asarray(stored, dtype=np.float64), np.asarray(fresh, dtype=np.float64)
    except (TypeError, ValueError):  # strings, or nulls where the other has a list
        row = next(i for i, (x, y) in enumerate(zip(stored, fresh, strict=True)) if x != y)
        return f"row {row}: stored {_brief(stored[row])}, re-computed {_brief(fresh[row])}"
    if a.shape != b.shape:
        return f"shape {a.shape} stored, {b.shape} re-computed"
    if np.allclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True):
        return None
    diff = np.abs(np.nan_to_num(a - b, nan=np.inf))
    at = np.unravel_index(int(np.argmax(diff)), diff.shape)
    bad = int(np.sum(~np.isclose(a, b, rtol=RTOL, atol=ATOL, equal_nan=True)))
    return f"{bad} value(s) differ, largest at row {at[0]}: stored {a[at]:.6g}, re-computed {b[at]:.6g}"


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
