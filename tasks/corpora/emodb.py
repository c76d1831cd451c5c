"""EmoDB (Berlin Database of Emotional Speech): its naming scheme -> clips (``prepare_emodb``), from names only."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tasks.corpora.scheme import Clip, NotInScheme, Skipped, walk_corpus

EMODB_EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}


_EMODB_NAME = re.compile(r"(\d{2})([a-z]\d{2})([A-Z])([a-z])")


def _parse_emodb(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() != ".wav":
        raise NotInScheme("extension is not .wav")
    match = _EMODB_NAME.fullmatch(rel.stem)
    if not match:
        raise NotInScheme("name is not speaker(2) text(3) emotion(1) version(1) (e.g. 03a01Fa)")
    speaker, text, letter, _version = match.groups()
    if letter not in EMODB_EMOTIONS:
        raise NotInScheme(f"unknown EmoDB emotion letter {letter!r}")
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="emodb",
        speaker=speaker,
        label=EMODB_EMOTIONS[letter],
        corpus_label=letter,
        sentence=text,
    )


def prepare_emodb(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """EmoDB: ``<speaker:2><text:3><emotion:1><version:1>.wav`` anywhere under the folder.

    E.g. ``03a01Fa.wav``. Emotion letters (German): W anger (Wut), L boredom (Langeweile), E disgust
    (Ekel), A fear (Angst), F happiness (Freude), T sadness (Trauer), N neutral. The text code is the
    sentence; the letter is kept as corpus_label; clip_id is the file stem.
    """
    return walk_corpus(corpus_dir, _parse_emodb)
