"""Which ffmpeg decodes: the bundled one unless a setting says otherwise, whatever is on PATH."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import pytest

from avemo.ffmpeg import BUNDLED, SYSTEM, DecoderError, count_decode_errors, decoder


@pytest.fixture(autouse=True)
def _fresh_resolution() -> Iterator[None]:
    decoder.cache_clear()  # each test resolves under its own PATH
    yield
    decoder.cache_clear()


def fake_ffmpeg(folder: Path, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "ffmpeg"
    path.write_text(f'#!/bin/sh\necho "ffmpeg version {version} Copyright (c) the fakers"\n')
    path.chmod(0o755)
    return path


def test_the_default_is_the_bundled_ffmpeg_even_with_another_on_path(tmp_path: Path, monkeypatch) -> None:
    fake = fake_ffmpeg(tmp_path / "bin", "0.0-system")
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    bundled = decoder()
    assert bundled == decoder(BUNDLED)
    assert bundled.kind == BUNDLED and bundled.path == imageio_ffmpeg.get_ffmpeg_exe()
    assert bundled.version != "0.0-system"
    system = decoder(SYSTEM)
    assert (system.kind, system.path, system.version) == (SYSTEM, str(fake), "0.0-system")
    assert system.identity() != bundled.identity()


def test_a_path_names_its_binary_and_its_version(tmp_path: Path) -> None:
    fake = fake_ffmpeg(tmp_path, "6.1-custom")
    chosen = decoder(str(fake))
    assert (chosen.kind, chosen.version) == ("path", "6.1-custom")
    assert chosen.identity() == {"ffmpeg": "path", "ffmpeg_version": "6.1-custom"}


def test_a_decoder_that_cannot_run_is_refused_with_what_to_do(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(DecoderError, match=r"nope/ffmpeg, which is not an executable file"):
        decoder(str(tmp_path / "nope" / "ffmpeg"))
    not_ffmpeg = tmp_path / "tool"
    not_ffmpeg.write_text("#!/bin/sh\necho hello\n")
    not_ffmpeg.chmod(0o755)
    with pytest.raises(DecoderError, match="is not ffmpeg"):
        decoder(str(not_ffmpeg))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(DecoderError, match="no ffmpeg is on PATH"):
        decoder(SYSTEM)


def test_decode_errors_count_ffmpegs_repeated_messages() -> None:
    stderr = "[mp3float @ 0x1] Header missing\n    Last message repeated 4 times\n[in#0] Packet mismatch\n\n"
    assert count_decode_errors(stderr) == 6
    assert count_decode_errors("") == 0
    closed_early = (  # avemo closed the frame pipe after the last frame it needed: not the source's fault
        "[vost#0:0/rawvideo @ 0x5] Error submitting a packet to the muxer: Broken pipe\n"
        "    Last message repeated 1 times\n[out#0/rawvideo @ 0x5] Error muxing a packet\n"
        "[out#0/rawvideo @ 0x5] Error closing file: Broken pipe\n"
    )
    assert count_decode_errors(closed_early) == 0
    assert count_decode_errors("[vp6f @ 0x2] End of AC stream reached\n" + closed_early) == 1
