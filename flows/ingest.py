"""``avemo ingest``: a corpus folder -> a validated clip manifest, written with its provenance.

Also the scan of several corpora that scheduled re-training (``flows.serve``) starts each cycle with:
both go through :func:`prepare`, the one place a corpus folder becomes manifest rows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from avemo import schemas
from avemo.config import IngestParams, ServeCorpus
from avemo.parquet_io import write_table
from avemo.progress import Progress
from avemo.provenance import provenance
from tasks.corpora.manifest import ManifestRow, build_manifest, manifest_table
from tasks.corpora.scheme import Skipped
from tasks.serve import combine_corpora, corpus_digest


@dataclass(frozen=True)
class IngestSummary:
    rows: list[ManifestRow]
    skipped: list[Skipped]
    out: Path
    seconds: float

    @property
    def unreadable(self) -> int:
        return sum(r.probe_error is not None for r in self.rows)


def prepare(
    corpus_dir: Path, corpus_format: str, workers: int, csv: Path | None, logger: logging.Logger | None = None
) -> tuple[list[ManifestRow], list[Skipped]]:
    """The corpus's manifest rows and skipped files; progress in files probed when ``logger`` is given."""
    progress: Progress | None = None

    def report(done: int, total: int) -> None:
        nonlocal progress
        if logger is None:
            return
        progress = progress or Progress(total, "files probed", logger)
        progress.advance(done - progress.done)

    return build_manifest(corpus_dir, corpus_format, workers, csv, report)


def run_ingest(
    corpus_dir: Path, corpus_format: str, out: Path, params: IngestParams, csv: Path | None, logger: logging.Logger
) -> IngestSummary:
    """Write the manifest of ``corpus_dir`` to ``out``; raises ManifestError before writing anything."""
    started = time.perf_counter()
    rows, skipped = prepare(corpus_dir, corpus_format, params.workers, csv, logger)
    document = provenance(
        "ingest",
        {**params.model_dump(mode="json"), "corpus_dir": str(corpus_dir), "format": corpus_format},
        corpus_dir=str(corpus_dir),
        skipped=[{"path": s.path, "reason": s.reason} for s in skipped],
        seconds=time.perf_counter() - started,
    )
    write_table(manifest_table(rows), out, schemas.MANIFEST, document)
    return IngestSummary(rows, skipped, out, time.perf_counter() - started)


def scan_corpora(corpora: Sequence[ServeCorpus], workers: int) -> tuple[Path, list[ManifestRow], list[dict[str, Any]]]:
    """Probe and hash every clip of every corpus: one manifest's rows, and each corpus's content digest."""
    scanned, summary = [], []
    for corpus in corpora:
        rows, _ = prepare(corpus.dir, corpus.format, workers, corpus.csv)
        scanned.append((corpus.dir, rows))
        digest = corpus_digest({r.clip_id: r.sha256 for r in rows})
        summary.append({"dir": str(corpus.dir), "format": corpus.format, "clips": len(rows), "sha256": digest})
    root, rows = combine_corpora(scanned)
    return root, rows, summary
