"""eNTERFACE'05: its naming scheme -> clips, one adapter (``prepare_enterface``), names and folders only."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tasks.corpora.scheme import Clip, NotInScheme, Skipped, walk_corpus

ENTERFACE_EMOTIONS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise")
_ENTERFACE_SUBJECT = re.compile(r"subject\s*(\d+)", re.IGNORECASE)


_ENTERFACE_SENTENCE = re.compile(r"sentence\s*(\d+)", re.IGNORECASE)


def _parse_enterface(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() != ".avi":
        raise NotInScheme("extension is not .avi")
    parts = rel.parts
    subject = _ENTERFACE_SUBJECT.fullmatch(parts[0]) if len(parts) in (3, 4) else None
    if not subject:
        raise NotInScheme("path is not subject N/<emotion>/[sentence M/]<file>.avi")
    emotion = parts[1].lower()
    if emotion not in ENTERFACE_EMOTIONS:
        raise NotInScheme(f"unknown eNTERFACE emotion folder {parts[1]!r}")
    sentence = None
    if len(parts) == 4:
        sentence_match = _ENTERFACE_SENTENCE.fullmatch(parts[2])
        if not sentence_match:
            raise NotInScheme(f"folder {parts[2]!r} is not 'sentence M'")
        sentence = str(int(sentence_match.group(1)))
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="enterface",
        speaker=str(int(subject.group(1))),
        label=emotion,
        corpus_label=parts[1],
        sentence=sentence,
    )


def prepare_enterface(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """eNTERFACE'05: ``subject N/<emotion>/sentence M/<file>.avi``.

    Emotion folders are anger disgust fear happiness sadness surprise (the label set's own names).
    Subject 6 of the real corpus lacks the sentence level (``subject 6/<emotion>/<file>.avi``); its
    sentence is null. speaker is N, sentence M; clip_id is the file stem (the corpus names its files
    s<N>_<emotion>_<M>, unique across subjects).
    """
    return walk_corpus(corpus_dir, _parse_enterface)
