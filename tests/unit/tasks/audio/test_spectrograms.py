import librosa
import numpy as np
import pytest

from avemo.config import AudioFeatureParams, SegmentParams
from tasks.audio.preemphasis import pre_emphasis
from tasks.audio.segment import Segment, segment_clip
from tasks.audio.spectrograms import (
    PCM_FULL_SCALE,
    AudioFeatureError,
    linear_spectrogram,
    log_mel_frames,
    mel_filterbank,
    mel_n_fft,
    regression_delta,
    segment_log_mel,
)

SR = 16000
SEG = SegmentParams()
FEAT = AudioFeatureParams()


@pytest.fixture(scope="module")
def signal() -> np.ndarray:
    """2 s of two tones in noise, pre-emphasised as the pipeline does."""
    t = np.arange(2 * SR) / SR
    rng = np.random.default_rng(0)
    tones = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.sin(2 * np.pi * 2500 * t)
    x = tones + 0.01 * rng.standard_normal(t.size)
    return pre_emphasis(x.astype(np.float32), 0.97)


def all_segments(n_samples: int) -> list[Segment]:
    return segment_clip(n_samples, SR, np.ones(-(-n_samples // 480), dtype=bool), 30, SEG)


def test_mel_fft_size_is_the_next_power_of_two():
    assert mel_n_fft(400) == 512 and mel_n_fft(512) == 512 and mel_n_fft(200) == 256


@pytest.mark.parametrize(
    ("sample_rate", "n_fft", "n_mels", "fmin", "fmax"),
    [
        (16000, 512, 64, 0.0, 8000.0),
        (16000, 400, 80, 0.0, 8000.0),
        (48000, 2048, 128, 20.0, 16000.0),
        (8000, 256, 40, 300.0, 3400.0),
    ],
)
def test_mel_filterbank_is_librosas_to_the_bit(sample_rate, n_fft, n_mels, fmin, fmax):
    ours = mel_filterbank(sample_rate, n_fft, n_mels, fmin, fmax)
    theirs = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    assert ours.dtype == theirs.dtype and np.array_equal(ours, theirs)


def test_log_mel_matches_a_direct_computation_of_one_frame(signal):
    mel = log_mel_frames(signal, SR, SEG, FEAT)
    assert mel.shape == (198, 64) and mel.dtype == np.float32  # 1 + (32000 - 400) // 160 frames
    frame = 57
    samples = signal[frame * 160 : frame * 160 + 400].astype(np.float64) * 32768.0  # 16-bit PCM scale
    power = np.abs(np.fft.rfft(samples * np.hamming(400), n=512)) ** 2
    melbank = librosa.filters.mel(sr=SR, n_fft=512, n_mels=64, fmin=0.0, fmax=8000.0)
    expected = np.log(melbank @ power + 0.01)  # AVEF Eq. 2.1: the 0.01 after the mel projection
    np.testing.assert_allclose(mel[frame], expected, rtol=1e-4, atol=1e-4)


def test_log_mel_of_a_tone_peaks_in_the_band_around_it():
    tone = np.sin(2 * np.pi * 1000 * np.arange(SR) / SR).astype(np.float32)
    centres = librosa.mel_frequencies(n_mels=66, fmin=0.0, fmax=8000.0)[1:-1]
    peak_bands = log_mel_frames(tone, SR, SEG, FEAT).argmax(axis=1)
    assert np.all(peak_bands == np.argmin(np.abs(centres - 1000)))


def test_digital_silence_sits_at_log_of_the_offset():
    mel = log_mel_frames(np.zeros(SR, dtype=np.float32), SR, SEG, FEAT)
    np.testing.assert_allclose(mel, np.log(0.01), rtol=1e-6)


def test_clip_shorter_than_a_window_has_no_frame():
    assert log_mel_frames(np.zeros(399, dtype=np.float32), SR, SEG, FEAT).shape == (0, 64)


def test_regression_delta_follows_the_formula_inside_and_replicates_edges():
    c = np.random.default_rng(1).standard_normal((10, 3))
    d = regression_delta(c, 2)
    assert d.shape == (10, 3)
    # d_t = (1 (c[t+1] - c[t-1]) + 2 (c[t+2] - c[t-2])) / (2 (1 + 4))
    np.testing.assert_allclose(d[5, 1], ((c[6, 1] - c[4, 1]) + 2 * (c[7, 1] - c[3, 1])) / 10)
    np.testing.assert_allclose(d[0, 2], ((c[1, 2] - c[0, 2]) + 2 * (c[2, 2] - c[0, 2])) / 10)
    np.testing.assert_allclose(d[9, 0], ((c[9, 0] - c[8, 0]) + 2 * (c[9, 0] - c[7, 0])) / 10)
    ramp = np.arange(10.0)[:, None]
    np.testing.assert_allclose(regression_delta(ramp, 2)[2:-2], 1.0)  # slope of a line


def test_segment_image_stacks_static_delta_and_delta_delta(signal):
    mel = log_mel_frames(signal, SR, SEG, FEAT)
    segment = all_segments(signal.size)[2]
    image = segment_log_mel(mel, segment, SEG, FEAT)
    assert image.shape == (64, 64, 3) and image.dtype == np.float32
    static = mel[68:132]  # segment 2 starts at frame 68
    np.testing.assert_array_equal(image[:, :, 0], static.T)
    band, t = 20, 30
    c = static[:, band]
    delta_formula = ((c[t + 1] - c[t - 1]) + 2 * (c[t + 2] - c[t - 2])) / 10
    np.testing.assert_allclose(image[band, t, 1], delta_formula, rtol=1e-5, atol=1e-6)
    delta_delta = regression_delta(regression_delta(static, 2), 2)
    np.testing.assert_allclose(image[:, :, 2], delta_delta.T, rtol=1e-5, atol=1e-6)


def test_segment_past_the_clip_end_is_rejected(signal):
    mel = log_mel_frames(signal, SR, SEG, FEAT)
    outside = Segment(index=0, first_frame=150, t_begin=1.5, t_end=2.155, voiced_share=1.0)
    with pytest.raises(AudioFeatureError, match="frames 150..213"):
        segment_log_mel(mel, outside, SEG, FEAT)


def test_fmax_above_nyquist_is_rejected():
    with pytest.raises(AudioFeatureError, match="Nyquist"):
        log_mel_frames(np.zeros(8000, dtype=np.float32), 8000, SEG, FEAT)


def test_linear_spectrogram_covers_the_kept_segments_once(signal):
    times, spec = linear_spectrogram(signal, SR, all_segments(signal.size), SEG, FEAT)
    # Segments span [0, 1.675 s); 40 ms frames every 10 ms are centred at 0.02 + 0.01 j < 1.675: j = 0..165.
    assert spec.shape == (166, 200) and spec.dtype == np.float32
    np.testing.assert_allclose(times, 0.02 + 0.01 * np.arange(166), atol=1e-12)
    frame, bin_ = 50, 37
    samples = signal[frame * 160 : frame * 160 + 640].astype(np.float64) * PCM_FULL_SCALE
    expected = np.log(np.abs(np.fft.rfft(samples * np.hamming(640), n=800)[bin_]) ** 2 + 0.01)
    np.testing.assert_allclose(spec[frame, bin_], expected, rtol=1e-4)
    assert spec[:, 22].mean() > spec[:, 60].mean() + 5  # the 440 Hz tone (bin 22) stands above noise


def test_linear_spectrogram_skips_dropped_segments(signal):
    segments = all_segments(signal.size)
    times, spec = linear_spectrogram(signal, SR, [segments[0], segments[3]], SEG, FEAT)
    # [0, 0.655): centres 0.02..0.65 (64 frames); [1.02, 1.675): centres 1.02..1.67 (66 frames)
    expected = np.concatenate([0.02 + 0.01 * np.arange(64), 1.02 + 0.01 * np.arange(66)])
    np.testing.assert_allclose(times, expected, atol=1e-12)
    assert spec.shape == (130, 200)


def test_linear_frames_running_past_the_clip_are_not_padded():
    n_samples = 10480  # exactly one 655 ms segment; 40 ms frames fit 1 + (10480 - 640) // 160 = 62 times
    silence = np.zeros(n_samples, dtype=np.float32)
    times, spec = linear_spectrogram(silence, SR, all_segments(n_samples), SEG, FEAT)
    assert spec.shape == (62, 200)
    np.testing.assert_allclose(times[-1], 0.63)


def test_linear_spectrogram_without_segments_is_empty(signal):
    times, spec = linear_spectrogram(signal, SR, [], SEG, FEAT)
    assert times.shape == (0,) and spec.shape == (0, 200) and spec.dtype == np.float32


def test_linear_window_longer_than_the_dft_is_rejected():
    with pytest.raises(AudioFeatureError, match="linear_n_fft to at least 1920"):
        linear_spectrogram(np.zeros(48000, dtype=np.float32), 48000, [], SEG, FEAT)
