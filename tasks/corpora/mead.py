"""MEAD: its naming scheme -> clips, one adapter (``prepare_mead``), names and folders only."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tasks.corpora.scheme import Clip, NotInScheme, Skipped, canonical_label, walk_corpus

MEAD_EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
_MEAD_SPEAKER = re.compile(r"[MW]\d{3}")


_MEAD_LEVEL = re.compile(r"level_(\d+)")
_MEAD_CLIP = re.compile(r"\d{3}")


def _parse_mead(rel: PurePosixPath, view: str) -> Clip:
    parts = rel.parts
    if (
        len(parts) != 6
        or not _MEAD_SPEAKER.fullmatch(parts[0])
        or parts[1] != "video"
        or not _MEAD_LEVEL.fullmatch(parts[4])
        or not _MEAD_CLIP.fullmatch(rel.stem)
        or rel.suffix.lower() != ".mp4"
    ):
        raise NotInScheme("path is not <speaker>/video/<view>/<emotion>/level_<n>/<nnn>.mp4")
    speaker, _, file_view, emotion, level_folder, _ = parts
    if file_view != view:
        raise NotInScheme(f"view {file_view!r} is not the selected view {view!r}")
    if emotion not in MEAD_EMOTIONS:
        raise NotInScheme(f"unknown MEAD emotion folder {emotion!r}")
    level_match = _MEAD_LEVEL.fullmatch(level_folder)
    assert level_match is not None  # parts[4] was matched above
    level = level_match.group(1)
    label = canonical_label(emotion)
    assert label is not None  # every MEAD_EMOTIONS folder has a canonical name
    return Clip(
        clip_id=f"{speaker}_{view}_{emotion}_{level_folder}_{rel.stem}",
        path=str(rel),
        corpus="mead",
        speaker=speaker,
        label=label,
        corpus_label=emotion,
        sentence=rel.stem,
        intensity=level,
    )


def prepare_mead(corpus_dir: Path, view: str = "front") -> tuple[list[Clip], list[Skipped]]:
    """MEAD: ``<speaker>/video/<view>/<emotion>/level_<n>/<nnn>.mp4``.

    E.g. ``M003/video/front/angry/level_1/001.mp4``.
    Emotions angry contempt disgusted fear happy neutral sad surprised; the corpus films each take
    from seven views (front, down, top, left_30, left_60, right_30, right_60) and one view is kept,
    ``front`` by default: the others are the same take and are skipped. intensity is the level n,
    sentence the clip number nnn; clip_id is ``<speaker>_<view>_<emotion>_level_<n>_<nnn>``.
    """
    return walk_corpus(corpus_dir, lambda rel: _parse_mead(rel, view))
