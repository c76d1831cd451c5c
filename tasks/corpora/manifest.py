"""Corpus folder -> clip manifest: the format's adapter, validation, then probing.

``validate_clips`` runs before anything is probed or written: a manifest with ambiguous ids, labels
outside ``avemo.labels.EMOTIONS`` or files outside the corpus folder would silently poison every later
stage, so ingest stops on them instead. ``probe_clips`` then hashes and probes the kept files.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import pyarrow as pa

from avemo.labels import EMOTIONS
from avemo.schemas import MANIFEST
from tasks.corpora.cremad import prepare_cremad
from tasks.corpora.csv_labels import prepare_csv
from tasks.corpora.emodb import prepare_emodb
from tasks.corpora.enterface import prepare_enterface
from tasks.corpora.mead import prepare_mead
from tasks.corpora.ravdess import prepare_ravdess
from tasks.corpora.scheme import Clip, ManifestError, Skipped
from tasks.probe import MediaInfo, ProbeError, probe, sha256_file


@dataclass(frozen=True)
class ManifestRow:
    """One manifest row; the fields are the columns of ``avemo.schemas.MANIFEST``, in order."""

    clip_id: str
    path: str
    corpus: str
    speaker: str
    label: str
    corpus_label: str
    sentence: str | None
    intensity: str | None
    sha256: str
    size_bytes: int
    duration_s: float | None
    audio_sample_rate: int | None
    audio_channels: int | None
    audio_codec: str | None
    video_fps: float | None
    video_width: int | None
    video_height: int | None
    video_codec: str | None
    probe_error: str | None


def _listing(title: str, lines: list[str], limit: int = 10) -> str:
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return f"{len(lines)} {title}:\n" + "\n".join(f"  {line}" for line in lines[:limit]) + more


def validate_clips(corpus_dir: Path, clips: Iterable[Clip]) -> None:
    """Refuse duplicate clip ids, labels outside EMOTIONS, empty speakers and missing or escaping files.

    A file counts as outside the corpus when its resolved path is, so ``../x.mp4``, an absolute path
    elsewhere and a symlink pointing out of the folder are all refused. Raises one ManifestError
    listing every kind of problem (the first 10 of each and their count).
    """
    root = corpus_dir.resolve()
    by_id: dict[str, list[str]] = defaultdict(list)
    bad_labels, bad_paths, no_speaker = [], [], []
    for clip in clips:
        by_id[clip.clip_id].append(clip.path)
        if clip.label not in EMOTIONS:
            bad_labels.append(f"{clip.path}: {clip.corpus_label!r}")
        if not clip.speaker:
            no_speaker.append(clip.path)
        resolved = (corpus_dir / clip.path).resolve()
        if not resolved.is_relative_to(root):
            bad_paths.append(f"{clip.path}: resolves to {resolved}, outside {root}")
        elif not resolved.is_file():
            bad_paths.append(f"{clip.path}: no such file")
    duplicates = [f"{clip_id!r}: {', '.join(paths)}" for clip_id, paths in by_id.items() if len(paths) > 1]
    problems = [
        _listing(title, lines)
        for title, lines in (
            ("duplicate clip ids (give each clip its own id)", duplicates),
            (f"labels outside {', '.join(EMOTIONS)} and their aliases", bad_labels),
            ("files missing or outside the corpus folder", bad_paths),
            ("clips without a speaker", no_speaker),
        )
        if lines
    ]
    if problems:
        raise ManifestError(f"corpus {corpus_dir} cannot be ingested:\n" + "\n".join(problems))


def probe_clip(corpus_dir: Path, clip: Clip) -> ManifestRow:
    """Hash, size and stream facts of one clip; a file ffmpeg cannot read keeps its row with probe_error."""
    path = corpus_dir / clip.path
    try:
        info, error = probe(path), None
    except ProbeError as why:
        info, error = MediaInfo(duration_s=None), str(why)
    return ManifestRow(
        **asdict(clip),
        sha256=sha256_file(path),
        size_bytes=path.stat().st_size,
        **asdict(info),
        probe_error=error,
    )


def probe_clips(
    corpus_dir: Path,
    clips: list[Clip],
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
) -> list[ManifestRow]:
    """Probe clips on a thread pool (each probe waits on an ffmpeg subprocess), rows in clip order.

    ``progress(done, total)`` is called after each clip, from the calling thread.
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    rows = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for row in pool.map(lambda clip: probe_clip(corpus_dir, clip), clips):
            rows.append(row)
            if progress:
                progress(len(rows), len(clips))
    return rows


def manifest_table(rows: list[ManifestRow]) -> pa.Table:
    """The rows as an Arrow table of schema MANIFEST (metadata included), nulls checked.

    Arrow does not enforce a field's ``nullable=False`` on construction, so it is checked here.
    """
    table = pa.Table.from_pylist([asdict(row) for row in rows], schema=MANIFEST)
    for field in MANIFEST:
        if not field.nullable and table.column(field.name).null_count:
            raise ManifestError(f"manifest column {field.name} must not be null")
    return table


PREPARERS: dict[str, Callable[[Path], tuple[list[Clip], list[Skipped]]]] = {
    "cremad": prepare_cremad,
    "ravdess": prepare_ravdess,
    "enterface": prepare_enterface,
    "mead": prepare_mead,
    "emodb": prepare_emodb,
    "csv": prepare_csv,
}


def build_manifest(
    corpus_dir: Path,
    corpus_format: str,
    workers: int = 4,
    csv_path: Path | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[ManifestRow], list[Skipped]]:
    """Parse ``corpus_dir`` with the ``corpus_format`` adapter, validate, then probe every kept clip.

    Validation runs before probing, so a corpus that would be refused fails in seconds rather than
    after hashing every file. Raises ManifestError for an unknown format, a missing folder, a corpus
    with no matching file, or any problem ``validate_clips`` finds.
    """
    if corpus_format not in PREPARERS:
        raise ManifestError(f"unknown corpus format {corpus_format!r}; choose one of {', '.join(PREPARERS)}")
    if csv_path is not None and corpus_format != "csv":
        raise ManifestError(f"a label CSV applies to --format csv only, not {corpus_format}")
    if not corpus_dir.is_dir():
        raise ManifestError(f"corpus folder {corpus_dir} does not exist or is not a folder")
    if corpus_format == "csv":
        clips, skipped = prepare_csv(corpus_dir, csv_path)
    else:
        clips, skipped = PREPARERS[corpus_format](corpus_dir)
    if not clips:
        reasons = "; ".join(sorted({item.reason for item in skipped})[:5])
        why = f" ({len(skipped)} files skipped: {reasons})" if skipped else ": it holds no files"
        raise ManifestError(f"no {corpus_format} clips found under {corpus_dir}{why}")
    validate_clips(corpus_dir, clips)
    return probe_clips(corpus_dir, clips, workers, progress), skipped
