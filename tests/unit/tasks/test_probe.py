"""Probing with ``ffmpeg -i`` alone: stream facts of real and generated files, and clear refusals."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tasks.probe import ProbeError, parse_ffmpeg_banner, probe, sha256_file

# ffmpeg's own lines, as it prints them (one stream per line, however long)
BANNER = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'x.mp4':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 864 kb/s
  Stream #0:0[0x1](und): Video: h264 (avc1 / 0x31637661), yuv420p(progressive), 700x700, 628 kb/s, 22.13 fps, 30 tbr, 15360 tbn (default)
  Stream #0:1[0x2](und): Audio: aac (LC) (mp4a / 0x6134706D), 44100 Hz, stereo, fltp, 231 kb/s (default)
"""  # noqa: E501


def test_parses_duration_and_streams() -> None:
    info = parse_ffmpeg_banner(BANNER)
    assert info.duration_s == pytest.approx(62.5)
    assert (info.video_width, info.video_height, info.video_fps, info.video_codec) == (700, 700, 22.13, "h264")
    assert (info.audio_sample_rate, info.audio_channels, info.audio_codec) == (44100, 2, "aac")


def test_audio_only_banner_has_no_video() -> None:
    info = parse_ffmpeg_banner(
        "Input #0, wav, from 'a.wav':\n  Duration: 00:00:02.00, bitrate: 352 kb/s\n"
        "  Stream #0:0: Audio: pcm_s16le ([1][0][0][0] / 0x0001), 22050 Hz, 1 channels, s16, 352 kb/s\n"
    )
    assert not info.has_video and info.audio_channels == 1 and info.audio_sample_rate == 22050


def test_unreadable_input_is_refused_with_ffmpegs_reason() -> None:
    with pytest.raises(ProbeError, match="ffmpeg cannot read it: .*Invalid data"):
        parse_ffmpeg_banner("x.mp4: Invalid data found when processing input\n")


def test_empty_and_garbage_files(tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(ProbeError, match="empty"):
        probe(empty)
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x01not media" * 50)
    with pytest.raises(ProbeError):
        probe(garbage)


def test_real_cremad_flv(shared_data: Path) -> None:
    path = shared_data / "cremad" / "VideoFlash" / "1001_DFA_ANG_XX.flv"
    info = probe(path)
    assert (info.video_width, info.video_height, info.video_fps) == (480, 360, 29.97)
    assert (info.audio_sample_rate, info.audio_channels) == (44100, 1)
    assert info.duration_s == pytest.approx(2.24)
    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()
