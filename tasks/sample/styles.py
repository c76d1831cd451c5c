"""What carries a sample clip's label and speaker: per-emotion prosody and expression, per-speaker look, and the
seeded generator of each clip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from avemo.errors import AvemoError

FPS = 25
FRAME_SIZE = 256


SAMPLE_RATE = 16000
DEFAULT_SENTENCES: tuple[str, ...] = ("DFA", "IEO")


# CREMA-D's twelve sentences and their syllable counts: the count sets how long a clip speaks.
SENTENCE_SYLLABLES: dict[str, int] = {
    "IEO": 6,  # It's eleven o'clock
    "TIE": 8,  # That is exactly what happened
    "IOM": 8,  # I'm on my way to the meeting
    "IWW": 8,  # I wonder what this is about
    "TAI": 7,  # The airplane is almost full
    "MTI": 9,  # Maybe tomorrow it will be cold
    "IWL": 8,  # I would like a new alarm clock
    "ITH": 10,  # I think I have a doctor's appointment
    "DFA": 6,  # Don't forget a jacket
    "ITS": 7,  # I think I've seen this before
    "TSI": 5,  # The surface is slick
    "WSI": 9,  # We'll stop in a couple of minutes
}


class SampleError(AvemoError):
    """The sample corpus cannot be made with these arguments."""


@dataclass(frozen=True)
class EmotionStyle:
    """How one emotion sounds and looks in the sample corpus."""

    f0_factor: float  # times the speaker's base f0
    f0_range_st: float  # spread of syllable pitch accents, semitones
    tempo: float  # utterance duration factor: < 1 speaks faster
    peak: float  # peak amplitude of the clip, full scale = 1
    pause_s: float  # the mid-sentence pause
    mouth_open: float  # share of the widest mouth opening reached on a loud syllable
    smile_px: float  # mouth corners moved up (+) or down (-), source pixels
    brow_px: float  # brows moved down (+, frown) or up (-), source pixels


EMOTION_STYLES: dict[str, EmotionStyle] = {
    "ANG": EmotionStyle(1.25, 5.0, 0.85, 0.85, 0.40, 1.00, -3.0, 8.0),
    "DIS": EmotionStyle(0.90, 3.0, 1.10, 0.45, 0.50, 0.50, -9.0, 5.0),
    "FEA": EmotionStyle(1.45, 6.0, 0.90, 0.50, 0.45, 0.90, -4.0, -8.0),
    "HAP": EmotionStyle(1.35, 9.0, 0.95, 0.60, 0.40, 0.80, 13.0, -2.0),
    "NEU": EmotionStyle(1.00, 2.0, 1.00, 0.40, 0.45, 0.60, 0.0, 0.0),
    "SAD": EmotionStyle(0.85, 2.0, 1.20, 0.22, 0.60, 0.35, -12.0, -5.0),
}


@dataclass(frozen=True)
class SpeakerLook:
    """What tells one sample speaker from another, in voice and in picture."""

    base_f0: float  # Hz
    formant_scale: float  # vocal tract: 1.0 male-like, ~1.15 female-like
    mirror: bool
    zoom: float  # face size relative to the source image
    tint: tuple[float, float, float]  # RGB gains


def _rgb(gains: np.ndarray) -> tuple[float, float, float]:
    """Three drawn gains as an RGB triple of plain floats."""
    red, green, blue = (float(g) for g in gains)
    return red, green, blue


def speaker_look(speaker: int, seed: int) -> SpeakerLook:
    """Draw a speaker's voice and appearance; even ids are female-like, odd ones male-like."""
    rng = np.random.default_rng([seed, speaker])
    female = speaker % 2 == 0
    return SpeakerLook(
        base_f0=float((210.0 if female else 115.0) * rng.uniform(0.92, 1.08)),
        formant_scale=1.15 if female else 1.0,
        mirror=bool(rng.integers(2)),
        zoom=float(rng.uniform(0.85, 1.15)),
        tint=_rgb(rng.uniform(0.75, 1.25, size=3)),
    )


def clip_rng(seed: int, speaker: int, emotion: str, sentence: str) -> np.random.Generator:
    """One Generator per clip, so a clip does not change when others are added or dropped."""
    codes = [int.from_bytes(code.encode(), "big") for code in (emotion, sentence)]
    return np.random.default_rng([seed, speaker, *codes])


def clip_name(speaker: int, sentence: str, emotion: str) -> str:
    """CREMA-D's file name; intensity XX means "unspecified", as CREMA-D uses for most sentences."""
    return f"{speaker}_{sentence}_{emotion}_XX.mp4"
