"""Probe a media file's streams with ``ffmpeg -i`` alone (no ffprobe is needed).

ffmpeg prints the container's duration and one ``Stream #`` line per stream on stderr; that text is
stable across ffmpeg releases for the fields read here.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from avemo.ffmpeg import ffmpeg_exe


class ProbeError(RuntimeError):
    """The file is not media ffmpeg can read."""


@dataclass(frozen=True)
class MediaInfo:
    duration_s: float | None
    audio_sample_rate: int | None = None
    audio_channels: int | None = None
    audio_codec: str | None = None
    video_fps: float | None = None
    video_width: int | None = None
    video_height: int | None = None
    video_codec: str | None = None

    @property
    def has_audio(self) -> bool:
        return self.audio_sample_rate is not None

    @property
    def has_video(self) -> bool:
        return self.video_width is not None


_DURATION = re.compile(r"Duration: (\d+):(\d+):(\d+(?:\.\d+)?)")
_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Audio|Video): (.*)")
_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "7.1": 8}


def _parse_audio(desc: str) -> dict:
    codec = desc.split(",")[0].split(" ")[0]
    rate = re.search(r"(\d+) Hz", desc)
    layout = re.search(r"Hz, ([^,]+)", desc)
    channels = None
    if layout:
        name = layout.group(1).strip()
        channels = _CHANNELS.get(name.split("(")[0])
        if channels is None:
            count = re.match(r"(\d+) channels", name)
            channels = int(count.group(1)) if count else None
    return {
        "audio_codec": codec,
        "audio_sample_rate": int(rate.group(1)) if rate else None,
        "audio_channels": channels,
    }


def _parse_video(desc: str) -> dict:
    codec = desc.split(",")[0].split(" ")[0]
    size = re.search(r"\b(\d{2,5})x(\d{2,5})\b", desc)
    fps = re.search(r"([\d.]+) fps", desc) or re.search(r"([\d.]+k?) tbr", desc)
    rate = None
    if fps:
        text = fps.group(1)
        rate = float(text[:-1]) * 1000 if text.endswith("k") else float(text)
    return {
        "video_codec": codec,
        "video_width": int(size.group(1)) if size else None,
        "video_height": int(size.group(2)) if size else None,
        "video_fps": rate,
    }


def parse_ffmpeg_banner(text: str) -> MediaInfo:
    """Read a MediaInfo from the stderr of ``ffmpeg -i FILE`` (first audio and video stream)."""
    if "Input #0" not in text:
        last = text.strip().splitlines()[-1] if text.strip() else "no output"
        raise ProbeError(f"ffmpeg cannot read it: {last}")
    facts: dict = {}
    match = _DURATION.search(text)
    facts["duration_s"] = (
        int(match.group(1)) * 3600 + int(match.group(2)) * 60 + float(match.group(3)) if match else None
    )
    for kind, desc in _STREAM.findall(text):
        if kind == "Audio" and "audio_codec" not in facts:
            facts.update(_parse_audio(desc))
        elif kind == "Video" and "video_codec" not in facts and "attached pic" not in desc:
            facts.update(_parse_video(desc))
    if "audio_codec" not in facts and "video_codec" not in facts:
        raise ProbeError("ffmpeg finds neither an audio nor a video stream")
    return MediaInfo(**facts)


def probe(path: Path) -> MediaInfo:
    """Stream facts of ``path``; raises ProbeError for a file ffmpeg cannot read."""
    if path.stat().st_size == 0:
        raise ProbeError("the file is empty (0 bytes)")
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    return parse_ffmpeg_banner(result.stderr)


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()
