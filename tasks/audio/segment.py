"""Cut a clip into the AVEF paper's 655 ms segments and keep those VAD marks as speech.

A segment is 64 analysis frames of 25 ms every 10 ms (25 + 63 * 10 = 655 ms); consecutive segments
share 30 frames, so they start every 34 frames (340 ms). Segments tile the clip from its first sample at
that fixed stride, never padded past its end: a clip shorter than one segment has none, and the caller
reports it. Dropping the segments that are mostly silence is how silence leaves both modalities: the
face frames are later taken from the kept segments' time ranges only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from avemo.config import SegmentParams
from avemo.errors import AvemoError


class SegmentError(AvemoError):
    """The framing settings or the VAD decisions do not fit the clip."""


@dataclass(frozen=True)
class Segment:
    index: int  # 0.. among the clip's KEPT segments
    first_frame: int  # its first analysis frame (hop-spaced, from the clip's first sample)
    t_begin: float  # seconds in the original clip
    t_end: float  # t_begin + the segment's duration (655 ms)
    voiced_share: float  # share of its analysis frames whose centre lies in a voiced VAD frame


def samples_per(ms: float, sample_rate: int) -> int:
    """The whole number of samples in ``ms`` milliseconds; framing at a fractional sample would drift."""
    samples = ms * sample_rate / 1000.0
    if not math.isclose(samples, round(samples), abs_tol=1e-9) or round(samples) < 1:
        raise SegmentError(f"{ms} ms is {samples:g} samples at {sample_rate} Hz; choose a whole number of samples")
    return round(samples)


def count_frames(n_samples: int, window: int, hop: int) -> int:
    """How many full windows of ``window`` samples, every ``hop``, fit in ``n_samples`` (no padding)."""
    return 0 if n_samples < window else 1 + (n_samples - window) // hop


def frame_voicing(
    n_samples: int, sample_rate: int, voiced: np.ndarray, vad_frame_ms: int, params: SegmentParams
) -> np.ndarray:
    """Whether each analysis frame's centre sample falls in a voiced VAD frame (bool per analysis frame)."""
    window = samples_per(params.window_ms, sample_rate)
    hop = samples_per(params.hop_ms, sample_rate)
    vad_frame = samples_per(vad_frame_ms, sample_rate)
    expected = -(-n_samples // vad_frame)
    if voiced.shape != (expected,):
        raise SegmentError(
            f"VAD decisions of shape {voiced.shape} for {n_samples} samples; expected ({expected},), one per "
            f"{vad_frame_ms} ms frame: run tasks.audio.vad.vad_decisions on the same signal, rate and frame_ms"
        )
    centres = np.arange(count_frames(n_samples, window, hop)) * hop + window // 2
    return voiced[centres // vad_frame]


def segment_clip(
    n_samples: int, sample_rate: int, voiced: np.ndarray, vad_frame_ms: int, params: SegmentParams
) -> list[Segment]:
    """The kept segments of a clip of ``n_samples``: those whose voiced share is >= ``min_voiced_share``.

    ``voiced`` holds one VAD decision per ``vad_frame_ms`` frame, as ``tasks.audio.vad.vad_decisions`` returns.
    """
    frame_voiced = frame_voicing(n_samples, sample_rate, voiced, vad_frame_ms, params)
    hop = samples_per(params.hop_ms, sample_rate)
    n_segments = count_frames(frame_voiced.size, params.frames, params.stride_frames)
    if n_segments == 0:
        return []
    first_frames = np.arange(n_segments) * params.stride_frames
    voiced_sums = np.concatenate([[0], np.cumsum(frame_voiced)])
    shares = (voiced_sums[first_frames + params.frames] - voiced_sums[first_frames]) / params.frames
    kept = np.flatnonzero(shares >= params.min_voiced_share)
    return [
        Segment(
            index=index,
            first_frame=int(first_frames[k]),
            t_begin=float(first_frames[k] * hop / sample_rate),
            t_end=float(first_frames[k] * hop / sample_rate + params.duration_s),
            voiced_share=float(shares[k]),
        )
        for index, k in enumerate(kept)
    ]
