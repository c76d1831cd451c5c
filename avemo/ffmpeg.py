"""Which ffmpeg binary to run: the system's when on PATH, else the one imageio-ffmpeg ships."""

from __future__ import annotations

import functools
import re
import shutil
import subprocess


@functools.cache
def ffmpeg_exe() -> str:
    system = shutil.which("ffmpeg")
    if system:
        return system
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


@functools.cache
def ffmpeg_version() -> str:
    """The version string ffmpeg prints, recorded in every output's provenance."""
    out = subprocess.run([ffmpeg_exe(), "-version"], capture_output=True, text=True, check=False).stdout
    match = re.match(r"ffmpeg version (\S+)", out)
    return match.group(1) if match else "unknown"
