"""Audio features: the AVEF paper's extended log-mel images and the FBP models' linear spectrogram.

AVEF (Eq. 2.1, 2.2): per 25 ms Hamming frame every 10 ms, ``log(melbank(64) * |rfft(frame)|^2 + 0.01)``
over 0-8 kHz, then first and second regression differences; each 655 ms segment becomes a
64 mel x 64 frame x 3 image [static, delta, delta-delta]. The log-mel of the whole clip is computed once
and sliced per segment, since segments overlap by 30 of their 64 frames.

FBP (deep-fusion-fbp-afew, "Audio-video Fusion System"): per 40 ms Hamming frame every 10 ms, an
800-point DFT and its lowest 200 bins (0-4 kHz at 16 kHz), as ``log(|X|^2 + log_offset)``.

Both read the pre-emphasised signal, with energies on the 16-bit PCM scale (samples times 32768, the
decoder's native units, as e.g. ``scipy.io.wavfile`` reads a WAV). AVEF adds its 0.01 only "to prevent
taking the logarithm for 0"; on the [-1, 1] float scale 0.01 would exceed the band energy of about 90% of
the mel values of real speech (measured on a 60 s talking-face clip) and flatten the image, while on the
PCM scale it only guards digital silence.

Frames are strided views of the signal, transformed a bounded batch at a time, so a long clip costs no
more memory than a short one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from avemo.config import AudioFeatureParams, SegmentParams
from avemo.errors import AvemoError
from tasks.audio.segment import Segment, count_frames, samples_per

_BATCH_FRAMES = 4096  # frames per FFT batch: a few MB whatever the clip's length
PCM_FULL_SCALE = 32768.0  # float sample 1.0 in 16-bit PCM units


class AudioFeatureError(AvemoError):
    """The feature settings do not fit the signal, or a segment lies outside the clip."""


def mel_n_fft(window: int) -> int:
    """The FFT size for the mel frames: the next power of two >= the window (512 for 400 samples).

    Zero-padding to a power of two only interpolates the spectrum; the mel filters are built on the
    same grid, so the band energies are those of the 25 ms frame.
    """
    return 1 << (window - 1).bit_length()


_SLANEY_HZ_PER_MEL = 200.0 / 3  # Slaney's mel scale: linear below 1 kHz ...
_SLANEY_LOG_STEP = np.log(6.4) / 27.0  # ... logarithmic above, 27 mels per factor 6.4
_SLANEY_KNEE_MEL = 1000.0 / _SLANEY_HZ_PER_MEL


def _hz_to_slaney_mel(hz: np.ndarray) -> np.ndarray:
    mels = hz / _SLANEY_HZ_PER_MEL
    above = hz >= 1000.0
    mels[above] = _SLANEY_KNEE_MEL + np.log(hz[above] / 1000.0) / _SLANEY_LOG_STEP
    return mels


def _slaney_mel_to_hz(mels: np.ndarray) -> np.ndarray:
    hz = _SLANEY_HZ_PER_MEL * mels
    above = mels >= _SLANEY_KNEE_MEL
    hz[above] = 1000.0 * np.exp(_SLANEY_LOG_STEP * (mels[above] - _SLANEY_KNEE_MEL))
    return hz


@functools.cache
def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int, fmin: float, fmax: float) -> np.ndarray:
    """librosa's ``filters.mel`` (Slaney mel scale, area normalisation, float32), computed as librosa
    computes it, to the bit (tests/unit/tasks/audio/test_spectrograms.py compares the two): librosa's
    ``filters`` module imports scipy.signal and numba, about 2 s before a first clip's work."""
    if fmax > sample_rate / 2:
        raise AudioFeatureError(
            f"fmax {fmax} Hz is above the Nyquist frequency of {sample_rate} Hz audio; "
            f"lower audio_features.fmax to at most {sample_rate / 2:g}"
        )
    bins_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sample_rate)
    low_mel, high_mel = _hz_to_slaney_mel(np.array([float(fmin), float(fmax)]))
    edges_mel = np.linspace(low_mel, high_mel, n_mels + 2)
    edges_hz = _slaney_mel_to_hz(edges_mel)
    widths, ramps = np.diff(edges_hz), np.subtract.outer(edges_hz, bins_hz)
    melbank = np.zeros((n_mels, n_fft // 2 + 1), dtype=np.float32)
    for band in range(n_mels):
        melbank[band] = np.maximum(0, np.minimum(-ramps[band] / widths[band], ramps[band + 2] / widths[band + 1]))
    melbank *= (2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels]))[:, np.newaxis]
    melbank.flags.writeable = False  # cached and shared between clips
    return melbank


def _hamming_power(
    x: np.ndarray, window: int, starts: np.ndarray, n_fft: int, reduce: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """``reduce(|rfft(hamming * PCM_FULL_SCALE * x[s:s + window], n_fft)|^2)`` over the frames at ``starts``.

    ``np.hamming`` is the symmetric window (MATLAB's ``hamming``); the papers do not say which.
    """
    if starts.size == 0:
        return reduce(np.zeros((0, n_fft // 2 + 1), dtype=np.float32))
    frames = sliding_window_view(x.astype(np.float32, copy=False), window)
    taper = (np.hamming(window) * PCM_FULL_SCALE).astype(np.float32)
    batches = np.array_split(starts, -(-starts.size // _BATCH_FRAMES))
    powers = []
    for batch in batches:
        spectrum = np.fft.rfft(frames[batch] * taper, n=n_fft)
        powers.append(reduce(spectrum.real**2 + spectrum.imag**2))
    return np.concatenate(powers)


def log_mel_frames(x: np.ndarray, sample_rate: int, seg: SegmentParams, feat: AudioFeatureParams) -> np.ndarray:
    """(n_frames, n_mels) float32 log-mel of every analysis frame of the clip (AVEF Eq. 2.1).

    The 0.01 goes AFTER the mel projection, as the paper's formula reads: it floors the band energies,
    whatever the filters' normalisation, so silence maps to log(0.01) rather than to -inf.
    """
    window = samples_per(seg.window_ms, sample_rate)
    hop = samples_per(seg.hop_ms, sample_rate)
    n_fft = mel_n_fft(window)
    melbank = mel_filterbank(sample_rate, n_fft, feat.n_mels, feat.fmin, feat.fmax)
    starts = np.arange(count_frames(x.size, window, hop)) * hop
    mel = _hamming_power(x, window, starts, n_fft, lambda power: power @ melbank.T)
    return np.log(mel + np.float32(feat.log_offset)).astype(np.float32, copy=False)


def regression_delta(features: np.ndarray, width: int) -> np.ndarray:
    """d_t = sum_{n=1..N} n (c_{t+n} - c_{t-n}) / (2 sum_{n=1..N} n^2) along axis 0, N = ``width`` (Eq. 2.2).

    The first and last frames are replicated N times (HTK's convention), so the edges see a flat
    continuation instead of zeros and the output keeps the input's length.
    """
    length = features.shape[0]
    padded = np.pad(features, [(width, width)] + [(0, 0)] * (features.ndim - 1), mode="edge")

    def shifted(n: int) -> np.ndarray:  # c_{t+n} for every t
        return padded[width + n : width + n + length]

    weights = range(1, width + 1)
    return sum(n * (shifted(n) - shifted(-n)) for n in weights) / (2 * sum(n * n for n in weights))


def segment_log_mel(
    mel_frames: np.ndarray, segment: Segment, seg: SegmentParams, feat: AudioFeatureParams
) -> np.ndarray:
    """The segment's (n_mels, frames, 3) float32 image: [static, delta, delta-delta] of its own frames.

    The differences use only the segment's frames (edges replicated), so a segment's image does not
    depend on its neighbours, as in the paper where each segment is an independent input.
    """
    static = mel_frames[segment.first_frame : segment.first_frame + seg.frames]
    if static.shape[0] != seg.frames:
        raise AudioFeatureError(
            f"segment {segment.index} needs frames {segment.first_frame}.."
            f"{segment.first_frame + seg.frames - 1} but the clip has {mel_frames.shape[0]}; "
            "build segments and log-mel frames from the same signal"
        )
    delta = regression_delta(static, feat.delta_width)
    delta2 = regression_delta(delta, feat.delta_width)
    return np.stack([static.T, delta.T, delta2.T], axis=-1).astype(np.float32)


def linear_spectrogram(
    x: np.ndarray,
    sample_rate: int,
    segments: Sequence[Segment],
    seg: SegmentParams,
    feat: AudioFeatureParams,
) -> tuple[np.ndarray, np.ndarray]:
    """Frame centres in seconds (T,) and the FBP models' (T, linear_bins) float32 log linear spectrogram.

    Only frames whose centre lies inside a kept segment, ``[t_begin, t_end)``, are computed, each once
    where segments overlap; frames whose 40 ms window would run past the clip's end are not (no padding).
    At 16 kHz the 800-point DFT has 20 Hz bins, so the lowest 200 span 0-3.98 kHz.
    """
    window = samples_per(feat.linear_window_ms, sample_rate)
    hop = samples_per(feat.linear_hop_ms, sample_rate)
    if window > feat.linear_n_fft or feat.linear_bins > feat.linear_n_fft // 2 + 1:
        raise AudioFeatureError(
            f"a {window}-sample window and {feat.linear_bins} bins do not fit an "
            f"{feat.linear_n_fft}-point DFT; raise audio_features.linear_n_fft to at least "
            f"{max(window, 2 * (feat.linear_bins - 1))}"
        )
    # Compare in half-samples so that centres (start + window / 2) and segment bounds stay exact integers.
    twice_centres = 2 * np.arange(count_frames(x.size, window, hop)) * hop + window
    segment_hop = samples_per(seg.hop_ms, sample_rate)
    segment_length = samples_per(seg.window_ms, sample_rate) + (seg.frames - 1) * segment_hop
    twice_begins = 2 * np.array([s.first_frame for s in segments], dtype=np.int64) * segment_hop
    coverage = np.zeros(twice_centres.size + 1, dtype=np.int64)
    np.add.at(coverage, np.searchsorted(twice_centres, twice_begins), 1)
    np.add.at(coverage, np.searchsorted(twice_centres, twice_begins + 2 * segment_length), -1)
    kept = np.flatnonzero(np.cumsum(coverage[:-1]) > 0)
    power = _hamming_power(x, window, kept * hop, feat.linear_n_fft, lambda p: p[:, : feat.linear_bins])
    times = (kept * hop + window / 2) / sample_rate
    return times, np.log(power + np.float32(feat.log_offset)).astype(np.float32, copy=False)
