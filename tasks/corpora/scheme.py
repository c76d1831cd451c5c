"""What every corpus adapter returns, and the helpers they share.

Each ``prepare_<corpus>(corpus_dir)`` (one module per corpus) reads only names and folders (no file is
opened), so parsing is fast and testable on empty files. Every file an adapter does not take comes back
as a ``Skipped`` with the reason, so a misnamed or misplaced file is reported instead of silently
vanishing from the dataset.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from avemo.errors import AvemoError
from avemo.labels import EMOTIONS


class ManifestError(AvemoError):
    """The corpus cannot become a valid manifest; the message lists the offending files."""


@dataclass(frozen=True)
class Clip:
    """One labelled media file as a corpus's naming scheme describes it, before probing."""

    clip_id: str
    path: str  # posix, relative to the corpus folder
    corpus: str
    speaker: str
    label: str  # one of EMOTIONS once validated
    corpus_label: str
    sentence: str | None = None
    intensity: str | None = None


@dataclass(frozen=True)
class Skipped:
    """A file an adapter did not take, and why (the CLI prints a summary of these)."""

    path: str
    reason: str


class NotInScheme(ValueError):
    """A file's name or place does not follow the corpus's scheme; the message is the skip reason."""


# Common spellings of the canonical labels: CSV files and MEAD's folders use adjectives.
LABEL_ALIASES: dict[str, str] = {
    "angry": "anger",
    "bored": "boredom",
    "contemptuous": "contempt",
    "disgusted": "disgust",
    "fearful": "fear",
    "afraid": "fear",
    "happy": "happiness",
    "sad": "sadness",
    "surprised": "surprise",
}


def canonical_label(text: str) -> str | None:
    """The EMOTIONS name for a canonical name or a common alias (any case), else None."""
    key = text.strip().lower()
    if key in EMOTIONS:
        return key
    return LABEL_ALIASES.get(key)


def walk_corpus(corpus_dir: Path, parse: Callable[[PurePosixPath], Clip]) -> tuple[list[Clip], list[Skipped]]:
    """Parse every file under ``corpus_dir`` (sorted, so manifests are reproducible)."""
    clips: list[Clip] = []
    skipped: list[Skipped] = []
    for path in sorted(corpus_dir.rglob("*")):
        if path.is_dir():
            continue
        rel = PurePosixPath(path.relative_to(corpus_dir).as_posix())
        if not path.is_file():
            skipped.append(Skipped(str(rel), "not a regular file (broken symlink?)"))
            continue
        try:
            clips.append(parse(rel))
        except NotInScheme as why:
            skipped.append(Skipped(str(rel), str(why)))
    return clips, skipped


def keep_preferred(
    clips: list[Clip], key: Callable[[Clip], str], rank: Callable[[Clip], int], reason: str
) -> tuple[list[Clip], list[Skipped]]:
    """Keep the best-ranked file of every group of files holding the same recording.

    Files tied at the best rank are all kept, so ``validate_clips`` reports them as duplicates.
    """
    groups: dict[str, list[Clip]] = defaultdict(list)
    for clip in clips:
        groups[key(clip)].append(clip)
    kept: list[Clip] = []
    skipped: list[Skipped] = []
    for group in groups.values():
        best = min(rank(clip) for clip in group)
        for clip in group:
            if rank(clip) == best:
                kept.append(clip)
            else:
                skipped.append(Skipped(clip.path, reason))
    return sorted(kept, key=lambda clip: clip.path), skipped
