"""Voice activity detection with webrtcvad: one speech/non-speech decision per 10, 20 or 30 ms frame.

The AVEF paper weights every frame 1 (speech) or 0 (silence) and drops silence from both modalities;
those weights are these decisions, and ``tasks.audio.segment`` keeps the segments they mark as speech.

VAD reads the signal BEFORE pre-emphasis: webrtcvad's Gaussian models score the log energies of six
sub-bands (80 Hz - 4 kHz) of ordinary, unfiltered audio. Pre-emphasis with 0.97 cuts the 80-250 Hz band,
where voiced speech carries most of its energy, by about 20 dB (|1 - 0.97 e^-jw|^2 at 150 Hz, 16 kHz) and
lifts the high-frequency noise floor, moving every band away from what those models were fitted on.

webrtcvad adapts its noise model during its first ~100 ms, so steady background noise at the very start
of a clip can be taken for speech there (3 frames of 30 ms at -60 dBFS white noise; py-webrtcvad issue #5).
That is at most 9 of a segment's 64 analysis frames, far below ``min_voiced_share``. Priming the detector
on the clip's opening instead was tried and rejected: it carries its hangover back onto leading silence.
"""

from __future__ import annotations

import numpy as np
import webrtcvad
from numpy.lib.stride_tricks import sliding_window_view

from avemo.config import VadParams
from avemo.errors import AvemoError

VAD_SAMPLE_RATES = (8000, 16000, 32000, 48000)


class VadError(AvemoError):
    """The signal cannot be passed to webrtcvad as given."""


def to_pcm16(x: np.ndarray) -> np.ndarray:
    """Float samples in [-1, 1] to little-endian 16-bit PCM (all webrtcvad reads), clipping overshoots."""
    return np.clip(np.round(x * 32768.0), -32768, 32767).astype("<i2")


def smooth_decisions(decisions: np.ndarray, width: int) -> np.ndarray:
    """Centred median filter of odd ``width`` over 0/1 decisions (a majority vote), edges replicated.

    It removes isolated clicks taken for speech and short gaps inside words.
    """
    if width == 1 or decisions.size == 0:
        return decisions.copy()
    half = width // 2
    windows = sliding_window_view(np.pad(decisions, half, mode="edge"), width)
    return windows.sum(axis=1) > half


def vad_decisions(x: np.ndarray, sample_rate: int, params: VadParams) -> np.ndarray:
    """Smoothed speech decision per VAD frame of ``params.frame_ms``, covering the whole clip.

    The result has ``ceil(len(x) / frame)`` entries; a trailing partial frame, which webrtcvad cannot
    judge, is unvoiced.
    """
    if sample_rate not in VAD_SAMPLE_RATES:
        raise VadError(f"webrtcvad needs a sample rate in {VAD_SAMPLE_RATES} Hz, got {sample_rate}; resample first")
    if x.ndim != 1:
        raise VadError(f"expected a mono 1-D signal, got shape {x.shape}; mix the channels down first")
    frame = sample_rate * params.frame_ms // 1000
    n_full, partial = divmod(x.size, frame)
    pcm = to_pcm16(x[: n_full * frame]).reshape(n_full, frame)
    vad = webrtcvad.Vad(params.aggressiveness)
    full = np.fromiter((vad.is_speech(row.tobytes(), sample_rate) for row in pcm), dtype=bool, count=n_full)
    smoothed = smooth_decisions(full, params.smoothing_frames)
    return np.concatenate([smoothed, np.zeros(int(partial > 0), dtype=bool)])
