"""RAVDESS: its naming scheme -> clips, one adapter (``prepare_ravdess``), names and folders only."""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from tasks.corpora.scheme import Clip, NotInScheme, Skipped, keep_preferred, walk_corpus

RAVDESS_EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happiness",
    "04": "sadness",
    "05": "anger",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}


RAVDESS_CORPUS_LABELS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fearful",
    "07": "disgust",
    "08": "surprised",
}


RAVDESS_INTENSITIES = {"01": "normal", "02": "strong"}


# Audio-video first; then audio-only before video-only, as segments are cut where the voice is active
# and a silent video yields none.
RAVDESS_MODALITY_PREFERENCE = ("01", "03", "02")
_RAVDESS_NAME = re.compile(r"(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})-(\d{2})")


def _parse_ravdess(rel: PurePosixPath) -> Clip:
    if rel.suffix.lower() not in (".mp4", ".wav"):
        raise NotInScheme("extension is not .mp4 or .wav")
    match = _RAVDESS_NAME.fullmatch(rel.stem)
    if not match:
        raise NotInScheme("name is not MM-VV-EE-II-SS-RR-AA (e.g. 01-01-03-02-01-01-12)")
    modality, channel, emotion, intensity, statement, _repetition, actor = match.groups()
    if modality not in RAVDESS_MODALITY_PREFERENCE:
        raise NotInScheme(f"unknown RAVDESS modality {modality!r}")
    if channel not in ("01", "02"):
        raise NotInScheme(f"unknown RAVDESS vocal channel {channel!r}")
    if emotion not in RAVDESS_EMOTIONS:
        raise NotInScheme(f"unknown RAVDESS emotion {emotion!r}")
    if intensity not in RAVDESS_INTENSITIES:
        raise NotInScheme(f"unknown RAVDESS intensity {intensity!r}")
    return Clip(
        clip_id=rel.stem,
        path=str(rel),
        corpus="ravdess",
        speaker=actor,
        label=RAVDESS_EMOTIONS[emotion],
        corpus_label=RAVDESS_CORPUS_LABELS[emotion],
        sentence=statement,
        intensity=RAVDESS_INTENSITIES[intensity],
    )


def prepare_ravdess(corpus_dir: Path) -> tuple[list[Clip], list[Skipped]]:
    """RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.{mp4,wav}``, the seven fields all two-digit codes.

    Modality 01 audio-video, 02 video-only, 03 audio-only; vocal channel 01 speech, 02 song (both are
    kept; the channel stays readable in clip_id); emotion 01 neutral 02 calm 03 happy 04 sad 05 angry
    06 fearful 07 disgust 08 surprised; intensity 01 normal 02 strong; statement 01/02 (the sentence);
    repetition; actor (the speaker, read from the name, not the folder). One file per recording is
    kept, by modality audio-video > audio-only > video-only: a video-only file is kept only when
    neither other modality of that recording is present. clip_id is the kept file's stem.
    """
    clips, skipped = walk_corpus(corpus_dir, _parse_ravdess)
    kept, duplicates = keep_preferred(
        clips,
        key=lambda clip: clip.clip_id[3:],  # every field but the modality
        rank=lambda clip: RAVDESS_MODALITY_PREFERENCE.index(clip.clip_id[:2]),
        reason="another modality of this recording is kept (audio-video > audio-only > video-only)",
    )
    return kept, skipped + duplicates
