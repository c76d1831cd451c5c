"""The rules of scheduled re-training, free of Prefect and torch so each is unit-tested on plain values.

A cycle (``flows.serve``) asks three questions, answered here: what changed in the corpora since the
last cycle (``diff_manifests``, by content hash, not by file time), which speakers are the fixed test
set no model ever trains on (``choose_heldout_speakers``), and whether the re-trained candidate
replaces the current model (``promotion_decision``).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np

from avemo.errors import AvemoError
from tasks.corpora.manifest import ManifestRow
from tasks.learning.metrics import classification_report


class ServeError(AvemoError):
    """A re-training cycle cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class CorpusChanges:
    """Clip ids added, changed (same id, other content) and removed since the last cycle."""

    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]

    @property
    def any(self) -> bool:
        return bool(self.added or self.changed or self.removed)

    def counts(self) -> dict[str, int]:
        return {"added": len(self.added), "changed": len(self.changed), "removed": len(self.removed)}


def diff_manifests(previous: Mapping[str, str] | None, current: Mapping[str, str]) -> CorpusChanges:
    """Compare two ``clip_id -> sha256`` maps; ``previous`` None (no cycle yet) makes every clip new."""
    previous = previous or {}
    return CorpusChanges(
        added=tuple(sorted(set(current) - set(previous))),
        changed=tuple(sorted(c for c in set(current) & set(previous) if current[c] != previous[c])),
        removed=tuple(sorted(set(previous) - set(current))),
    )


def corpus_digest(hashes: Mapping[str, str]) -> str:
    """One sha256 over a corpus's (clip id, content hash) pairs: equal digests, equal corpora."""
    lines = "".join(f"{clip}\t{sha}\n" for clip, sha in sorted(hashes.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def combine_corpora(corpora: Sequence[tuple[Path, list[ManifestRow]]]) -> tuple[Path, list[ManifestRow]]:
    """The rows of several corpora as one manifest, paths re-based on the corpora's common folder.

    Preprocessing reads one corpus folder per manifest; re-basing keeps every path relative to it, so
    the features' ``path`` column still names the file. Clip ids must be unique across corpora.
    """
    folders = [Path(folder).resolve() for folder, _ in corpora]
    root = Path(os.path.commonpath(folders))
    rows = [
        replace(row, path=(PurePosixPath(folder.relative_to(root).as_posix()) / row.path).as_posix())
        for folder, (_, corpus_rows) in zip(folders, corpora, strict=True)
        for row in corpus_rows
    ]
    repeated = sorted(clip for clip, count in Counter(r.clip_id for r in rows).items() if count > 1)
    if repeated:
        raise ServeError(
            f"clip ids repeat across serve.corpora, e.g. {repeated[:5]}; each corpus must name its clips "
            "differently (list a corpus once, or give one a csv manifest with its own clip_id column)"
        )
    return root, rows


def choose_heldout_speakers(speakers: Sequence[str], share: float, seed: int) -> tuple[str, ...]:
    """``share`` of the speakers (at least 1), drawn with ``seed``; at least 2 are left for training.

    Drawn once and then kept: a speaker that a later cycle moved from training to test would be
    scored by a current model that has heard them.
    """
    pool = sorted({str(s) for s in speakers})
    count = max(1, round(share * len(pool)))
    if len(pool) - count < 2:
        raise ServeError(
            f"{len(pool)} speakers cannot give {count} held-out test speaker(s) and 2 or more to train on; "
            "add speakers or lower serve.heldout_share"
        )
    return tuple(sorted(np.random.default_rng(seed).choice(pool, size=count, replace=False).tolist()))


NOT_A_CLASS = "(a class the model was not trained on)"


def heldout_scores(true: Sequence[str], predicted: Sequence[str | None]) -> dict:
    """UAR and accuracy of label names; None marks a clip whose class the model lacks: always a miss."""
    named = [NOT_A_CLASS if p is None else p for p in predicted]
    classes = sorted(set(true) | set(named))
    report = classification_report([classes.index(t) for t in true], [classes.index(p) for p in named], classes)
    return {"uar": report["uar"], "accuracy": report["accuracy"], "clips": report["n_clips"]}


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


def promotion_decision(candidate_uar: float, current_uar: float | None) -> Decision:
    """Promote unless the candidate scores worse than the current model on the same held-out clips.

    A tie promotes: the candidate has seen more data at no measured cost.
    """
    if current_uar is None:
        return Decision(True, f"no current model; candidate held-out UAR {candidate_uar:.4f}")
    if candidate_uar >= current_uar:
        return Decision(True, f"candidate held-out UAR {candidate_uar:.4f} >= current {current_uar:.4f}")
    return Decision(False, f"candidate held-out UAR {candidate_uar:.4f} < current {current_uar:.4f}: kept current")
