"""CREMA-D: its naming scheme -> clips, one adapter (``prepare_cremad``), names and folders only."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tasks.corpora.scheme import Clip, NotInScheme, Skipped, keep_preferred, walk_corpus

CREMAD_EMOTIONS = {
    "ANG": "anger",
    "DIS": "disgust",
    "FEA": "fear",
    "HAP": "happiness",
    "NEU": "neutral",
    "SAD": "sadness",
}


CREMAD_LEVELS = {"LO", "MD", "HI", "XX"}


# Video before audio (the video files carry the audio track too), then the lossless audio.
CREMAD_FORMAT_PREFERENCE = (".mp4", ".flv", ".wav", ".mp3")
_CREMAD_NAME = re.compile(r"(\d{4})_([A-Z]{3})_([A-Z]{3})_([A-Z]{2})")


def _parse_cremad(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() not in CREMAD_FORMAT_PREFERENCE:
        raise NotInScheme(f"extension is not one of {' '.join(CREMAD_FORMAT_PREFERENCE)}")
    match = _CREMAD_NAME.fullmatch(rel.stem)
    if not match:
        raise NotInScheme("name is not ActorID_Sentence_Emotion_Level (e.g. 1001_DFA_ANG_XX)")
    actor, sentence, emotion, level = match.groups()
    if emotion not in CREMAD_EMOTIONS:
        raise NotInScheme(f"unknown CREMA-D emotion {emotion!r}")
    if level not in CREMAD_LEVELS:
        raise NotInScheme(f"unknown CREMA-D level {level!r}")
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="cremad",
        speaker=actor,
        label=CREMAD_EMOTIONS[emotion],
        corpus_label=emotion,
        sentence=sentence,
        intensity=None if level == "XX" else level,
    )


def prepare_cremad(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """CREMA-D: ``ActorID_Sentence_Emotion_Level.{mp4,flv,wav,mp3}`` anywhere under the folder.

    E.g. ``VideoFlash/1001_DFA_ANG_XX.flv``. Emotion is ANG DIS FEA HAP NEU SAD; Level LO MD HI, or XX
    (unspecified, stored as a null intensity). The full corpus holds each clip in several formats
    (VideoMP4, VideoFlash, AudioWAV, AudioMP3): one file per clip is kept, preferring video, which
    carries the audio too: mp4 > flv > wav > mp3; the others are skipped duplicates. clip_id is the
    file stem, speaker the actor id.
    """
    clips, skipped = walk_corpus(corpus_dir, _parse_cremad)
    kept, duplicates = keep_preferred(
        clips,
        key=lambda clip: clip.clip_id,
        rank=lambda clip: CREMAD_FORMAT_PREFERENCE.index(PurePosixPath(clip.path).suffix.lower()),
        reason="another format of this clip is kept (preference mp4 > flv > wav > mp3)",
    )
    return kept, skipped + duplicates
