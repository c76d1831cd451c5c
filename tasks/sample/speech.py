"""Source-filter "speech" of a sample clip: a syllable plan with pauses, an f0 contour, three formants, and the
mouth opening that follows it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import signal

from tasks.sample.styles import FPS, SAMPLE_RATE, EmotionStyle, SampleError, SpeakerLook

_NOISE_FLOOR = 3e-4  # about -70 dBFS: silent to VAD, yet not digital zero


# Vowel formants (F1, F2, F3) in Hz of an adult male voice; female-like voices scale them up.
_VOWELS = np.array(
    [[730, 1090, 2440], [270, 2290, 3010], [300, 870, 2240], [530, 1840, 2480], [570, 840, 2410]],
    dtype=np.float64,
)


_FORMANT_BANDWIDTHS = (90.0, 110.0, 170.0)


@dataclass(frozen=True)
class UtterancePlan:
    duration_s: float  # a whole number of video frames
    syllables: tuple[tuple[float, float], ...]  # (start, end) seconds


def plan_utterance(n_syllables: int, style: EmotionStyle, rng: np.random.Generator) -> UtterancePlan:
    """Lay syllables out in two phrases split by one long pause, inside a 2-4 s clip.

    The pause is at least 400 ms so a VAD with a 150 ms smoothing window still drops it.
    """
    frame_s = 1.0 / FPS
    wanted = (0.9 + 0.3 * n_syllables) * style.tempo + rng.uniform(-0.2, 0.2)
    duration = round(float(np.clip(wanted, 2.0, 4.0)) / frame_s) * frame_s
    lead, trail = rng.uniform(0.12, 0.25, size=2)
    pause = style.pause_s + rng.uniform(0.0, 0.08)
    gaps = rng.uniform(0.03, 0.07, size=n_syllables - 1)
    split = n_syllables // 2 + int(rng.integers(-1, 2))
    gaps[split - 1] = pause
    speaking = duration - lead - trail - gaps.sum()
    if speaking < 0.1 * n_syllables:
        raise SampleError(
            f"{n_syllables} syllables do not fit in {duration:.2f} s; use a sentence with fewer syllables"
        )
    lengths = rng.uniform(0.8, 1.2, size=n_syllables)
    lengths *= speaking / lengths.sum()
    starts = lead + np.concatenate([[0.0], np.cumsum(lengths[:-1] + gaps)])
    return UtterancePlan(duration, tuple(zip(starts.tolist(), (starts + lengths).tolist(), strict=True)))


def _resonator(frequency: float, bandwidth: float, sample_rate: int) -> tuple[np.ndarray, np.ndarray]:
    """Two-pole formant resonance with unit gain at DC."""
    radius = np.exp(-np.pi * bandwidth / sample_rate)
    a = np.array([1.0, -2.0 * radius * np.cos(2.0 * np.pi * frequency / sample_rate), radius**2])
    return np.array([a.sum()]), a


def _syllable(
    f0_start: float,
    f0_peak: float,
    n_samples: int,
    vowel: np.ndarray,
    sample_rate: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """One voiced syllable: harmonics of a rising-falling f0 (1/k tilt) through three formants."""
    t = np.arange(n_samples) / n_samples
    f0 = f0_start + (f0_peak - f0_start) * np.sin(np.pi * t) ** 2
    # slow pitch wander of a few tenths of a percent, so no two periods are exactly alike
    f0 *= 1.0 + 0.004 * rng.standard_normal(n_samples).cumsum() / np.sqrt(np.arange(1, n_samples + 1))
    phase = np.cumsum(f0) / sample_rate
    harmonics = np.arange(1, int(0.45 * sample_rate / f0.max()) + 1)
    voiced = (np.sin(2.0 * np.pi * np.outer(phase, harmonics)) / harmonics).sum(axis=1)
    for frequency, bandwidth in zip(vowel, _FORMANT_BANDWIDTHS, strict=True):
        voiced = signal.lfilter(*_resonator(frequency, bandwidth, sample_rate), voiced)
    ramp = min(int(0.04 * sample_rate), n_samples // 3)
    envelope = np.ones(n_samples)
    envelope[:ramp] = np.sin(0.5 * np.pi * np.arange(ramp) / ramp) ** 2
    envelope[n_samples - ramp :] = envelope[:ramp][::-1]
    return voiced * envelope


def synthesize_speech(
    plan: UtterancePlan,
    style: EmotionStyle,
    look: SpeakerLook,
    rng: np.random.Generator,
    sample_rate: int = SAMPLE_RATE,
) -> np.ndarray:
    """Source-filter "vowel" speech for ``plan``: float32 mono, peak at ``style.peak``, light noise.

    Pitch accents are drawn within the emotion's f0 range around a declining phrase line, so the
    label shows in f0 level, f0 range, rate and energy, as in acted emotional speech.
    """
    audio = np.zeros(round(plan.duration_s * sample_rate))
    centre = look.base_f0 * style.f0_factor
    declination = np.linspace(style.f0_range_st / 4, -style.f0_range_st / 4, len(plan.syllables))
    for (start, end), drift in zip(plan.syllables, declination, strict=True):
        accent = drift + rng.uniform(-0.5, 0.5) * style.f0_range_st
        f0_start = centre * 2.0 ** ((accent - style.f0_range_st / 6) / 12)
        f0_peak = centre * 2.0 ** ((accent + style.f0_range_st / 6) / 12)
        vowel = _VOWELS[rng.integers(len(_VOWELS))] * look.formant_scale
        first, last = round(start * sample_rate), round(end * sample_rate)
        syllable = _syllable(f0_start, f0_peak, last - first, vowel, sample_rate, rng)
        audio[first:last] += rng.uniform(0.7, 1.0) * syllable
    audio *= style.peak / np.abs(audio).max()
    audio += _NOISE_FLOOR * rng.standard_normal(audio.size)
    return audio.astype(np.float32)


def mouth_opening(plan: UtterancePlan, style: EmotionStyle, n_frames: int) -> np.ndarray:
    """Per video frame, how far the mouth is open (0..1): open mid-syllable, shut in pauses."""
    times = (np.arange(n_frames) + 0.5) / FPS
    opening = np.zeros(n_frames)
    for start, end in plan.syllables:
        inside = (times >= start) & (times < end)
        opening[inside] = np.sin(np.pi * (times[inside] - start) / (end - start))
    return opening * style.mouth_open
