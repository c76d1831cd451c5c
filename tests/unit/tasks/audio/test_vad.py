import numpy as np
import pydantic
import pytest

from avemo.config import VadParams
from tasks.audio.vad import VadError, smooth_decisions, to_pcm16, vad_decisions
from tasks.demux import load_audio

SR = 16000


@pytest.fixture(scope="module")
def utterance(shared_data):
    """A real EmoDB sentence (2.0 s, speech with pauses), decoded at 16 kHz."""
    return load_audio(shared_data / "emodb" / "wav" / "03a01Fa.wav", SR).signal


def test_digital_silence_has_no_voiced_frame():
    decisions = vad_decisions(np.zeros(SR, dtype=np.float32), SR, VadParams())
    assert decisions.dtype == bool
    assert decisions.shape == (34,)  # ceil(16000 / 480)
    assert not decisions.any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_low_noise_has_no_voiced_frame(seed):
    noise = (1e-4 * np.random.default_rng(seed).standard_normal(2 * SR)).astype(np.float32)  # -80 dBFS
    assert not vad_decisions(noise, SR, VadParams()).any()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_moderate_noise_is_unvoiced_once_webrtcvad_has_adapted(seed):
    noise = (1e-3 * np.random.default_rng(seed).standard_normal(2 * SR)).astype(np.float32)  # -60 dBFS
    decisions = vad_decisions(noise, SR, VadParams())
    assert decisions[:4].sum() <= 3  # its noise model adapts over the first ~100 ms
    assert not decisions[4:].any()


@pytest.mark.parametrize("name", ["emodb/wav/03a01Fa.wav", "cremad/VideoFlash/1001_DFA_NEU_XX.flv"])
def test_real_utterance_is_partly_voiced(shared_data, name):
    decisions = vad_decisions(load_audio(shared_data / name, SR).signal, SR, VadParams())
    assert 0.3 <= decisions.mean() <= 0.98


def test_trailing_partial_frame_is_unvoiced(utterance):
    params = VadParams(frame_ms=30, smoothing_frames=1)
    whole = vad_decisions(utterance, SR, params)
    inside_speech = int(np.flatnonzero(whole)[len(np.flatnonzero(whole)) // 2])
    cut = utterance[: inside_speech * 480 + 240]  # ends half-way into a voiced frame
    decisions = vad_decisions(cut, SR, params)
    assert decisions.shape == (inside_speech + 1,)
    np.testing.assert_array_equal(decisions[:-1], whole[:inside_speech])
    assert not decisions[-1]


def test_smoothing_removes_isolated_decisions_with_edges_replicated():
    raw = np.array([0, 1, 0, 0, 1, 1, 1, 0, 1, 1], dtype=bool)
    np.testing.assert_array_equal(smooth_decisions(raw, 3), [0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(smooth_decisions(raw, 1), raw)


def test_pcm16_conversion_scales_and_clips():
    pcm = to_pcm16(np.array([0.0, 0.5, -1.0, 1.0, 2.0, -0.25], dtype=np.float32))
    assert pcm.dtype == np.dtype("<i2")
    np.testing.assert_array_equal(pcm, [0, 16384, -32768, 32767, 32767, -8192])


@pytest.mark.parametrize("field", [{"frame_ms": 25}, {"smoothing_frames": 4}, {"aggressiveness": 4}])
def test_config_rejects_settings_webrtcvad_cannot_use(field):
    with pytest.raises(pydantic.ValidationError):
        VadParams(**field)


def test_rejects_a_rate_webrtcvad_cannot_read():
    with pytest.raises(VadError, match="22050"):
        vad_decisions(np.zeros(22050, dtype=np.float32), 22050, VadParams())
