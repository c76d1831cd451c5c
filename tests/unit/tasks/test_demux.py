"""Demuxing: audio resampled and mixed down by ffmpeg, video frames streamed at the native rate."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from avemo.ffmpeg import ffmpeg_exe
from tasks.demux import DecodeLog, DemuxError, iter_video_frames, load_audio
from tasks.probe import probe


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-y", *args], check=True)


def test_stereo_48k_tone_becomes_mono_16k(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    # left 440 Hz, right silent: the mono mix is the tone at half amplitude
    _ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=440:sample_rate=48000:duration=1.5",
        "-f",
        "lavfi",
        "-i",
        "anullsrc=r=48000:cl=mono",
        "-filter_complex",
        "[0:a][1:a]amerge=inputs=2[a]",
        "-map",
        "[a]",
        "-t",
        "1.5",
        str(tmp_path / "tone.wav"),
    )
    assert probe(path).audio_channels == 2
    decoded = load_audio(path, 16000)
    assert decoded.errors == 0
    audio = decoded.signal
    assert audio.dtype == np.float32 and audio.size == pytest.approx(24000, abs=16)
    spectrum = np.abs(np.fft.rfft(audio[1000:17000]))  # 16000 samples at 16 kHz: 1 Hz per bin
    assert np.argmax(spectrum) == pytest.approx(440, abs=2)
    assert np.abs(audio).max() == pytest.approx(0.125 / 2, rel=0.1)  # ffmpeg's sine is at 1/8 full scale


def test_video_frames_are_streamed_once_each_at_native_rate(tmp_path: Path) -> None:
    path = tmp_path / "counter.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=12.5:duration=2", "-pix_fmt", "yuv420p", str(path))
    info = probe(path)
    frames = list(iter_video_frames(path, info.video_fps, info.video_width, info.video_height))
    assert len(frames) == 25
    assert [f.index for f in frames] == list(range(25))
    assert frames[-1].t == pytest.approx(24 / 12.5)
    assert frames[0].rgb.shape == (64, 96, 3)
    assert not np.array_equal(frames[0].rgb, frames[5].rgb)  # testsrc moves: distinct frames
    wanted = list(iter_video_frames(path, info.video_fps, info.video_width, info.video_height, wanted=[3, 7]))
    assert [f.index for f in wanted] == [3, 7]
    assert np.array_equal(wanted[0].rgb, frames[3].rgb)


def test_frames_decoded_smaller_than_native_are_its_pixels_averaged(tmp_path: Path) -> None:
    path = tmp_path / "counter.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=96x64:rate=10:duration=1", "-pix_fmt", "yuv420p", str(path))
    native = next(iter_video_frames(path, 10.0, 96, 64, wanted=[4])).rgb.astype(np.float32)
    half = next(iter_video_frames(path, 10.0, 48, 32, wanted=[4], native_size=(96, 64))).rgb
    assert half.shape == (32, 48, 3)
    blocks = native.reshape(32, 2, 48, 2, 3).mean(axis=(1, 3))
    assert np.abs(half - blocks).mean() < 3.0  # 2 x 2 means, up to chroma rounding


def test_broken_audio_raises_demux_error(tmp_path: Path) -> None:
    path = tmp_path / "video_only.mp4"
    _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10:duration=1", "-pix_fmt", "yuv420p", str(path))
    with pytest.raises(DemuxError, match="audio decoding failed"):
        load_audio(path, 16000)


def test_a_corrupt_middle_decodes_with_its_errors_counted(shared_data: Path, tmp_path: Path) -> None:
    """40 kB of random bytes in the middle of a real clip: ffmpeg skips over them, and says so."""
    clean = shared_data / "cremad" / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    corrupt = tmp_path / "corrupt.flv"
    corrupt.write_bytes(with_random_middle(clean.read_bytes(), 40_000))
    assert load_audio(clean, 16000).errors == 0
    decoded = load_audio(corrupt, 16000)
    assert decoded.errors > 0 and decoded.signal.size > 0
    info = probe(corrupt)
    log = DecodeLog()
    frames = list(iter_video_frames(corrupt, info.video_fps, info.video_width, info.video_height, log=log))
    assert frames and log.errors > 0


def with_random_middle(data: bytes, size: int) -> bytes:
    middle = len(data) // 2 - size // 2
    noise = np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8).tobytes()
    return data[:middle] + noise + data[middle + size :]
