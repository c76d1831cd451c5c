"""A user's own corpus: a ``path,speaker,label`` CSV -> clips (``--format csv``)."""

from __future__ import annotations

import csv
import posixpath
from pathlib import Path, PurePosixPath

from tasks.corpora.scheme import Clip, ManifestError, Skipped, canonical_label

CSV_REQUIRED_COLUMNS = ("path", "speaker", "label")
CSV_OPTIONAL_COLUMNS = ("clip_id", "sentence", "intensity")


def _relative_to_corpus(corpus_dir: Path, text: str) -> str:
    """A CSV path as a posix path relative to the corpus; one pointing elsewhere stays as written."""
    path = Path(text)
    if path.is_absolute():
        for root in (corpus_dir.absolute(), corpus_dir.resolve()):
            if path.is_relative_to(root):
                return path.relative_to(root).as_posix()
        return text
    return posixpath.normpath(path.as_posix())


def prepare_csv(corpus_dir: Path, csv_path: Path | None = None) -> tuple[list[Clip], list[Skipped]]:
    """A user's CSV with header ``path,speaker,label`` and optional ``clip_id,sentence,intensity``.

    The CSV is ``corpus_dir/labels.csv`` unless ``csv_path`` names another. Paths are relative to
    ``corpus_dir`` wherever the CSV lies (the manifest's own convention), or absolute inside it. label is
    a canonical name or a common alias (``LABEL_ALIASES``, any case), the cell kept as corpus_label.
    clip_id defaults to the file stem. Every row is taken: a bad row (unknown label, missing file,
    path outside the corpus) is left for ``validate_clips`` to report with the others, never skipped.
    Unknown columns are refused, so a misspelt optional column cannot silently drop its values.
    """
    csv_path = csv_path or corpus_dir / "labels.csv"
    if not csv_path.is_file():
        raise ManifestError(f"label CSV {csv_path} not found: put labels.csv in the corpus folder or pass its path")
    with csv_path.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        columns = [name.strip() for name in reader.fieldnames or []]
        missing = [name for name in CSV_REQUIRED_COLUMNS if name not in columns]
        unknown = [name for name in columns if name not in CSV_REQUIRED_COLUMNS + CSV_OPTIONAL_COLUMNS]
        if missing or unknown:
            raise ManifestError(
                f"{csv_path}: header must hold {','.join(CSV_REQUIRED_COLUMNS)} and optionally "
                f"{','.join(CSV_OPTIONAL_COLUMNS)}; missing {missing or 'none'}, unknown {unknown or 'none'}"
            )
        rows = []
        for row in reader:
            if None in row:
                raise ManifestError(f"{csv_path} line {reader.line_num}: more cells than header columns")
            rows.append({key.strip(): (value or "").strip() for key, value in row.items()})
    clips = []
    for row in rows:
        path = _relative_to_corpus(corpus_dir, row["path"])
        clips.append(
            Clip(
                clip_id=row.get("clip_id") or PurePosixPath(path).stem,
                path=path,
                corpus="csv",
                speaker=row["speaker"],
                label=canonical_label(row["label"]) or row["label"],
                corpus_label=row["label"],
                sentence=row.get("sentence") or None,
                intensity=row.get("intensity") or None,
            )
        )
    return clips, []
