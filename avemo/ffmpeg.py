"""Which ffmpeg decodes: by default the one imageio-ffmpeg ships (pinned in the lock), never whichever
happens to be on PATH, so the same clip and params give the same features on every machine and before and
after an unrelated package install.

``preprocess.audio.ffmpeg`` chooses: ``bundled`` (the default), ``system`` (the first ``ffmpeg`` on PATH)
or a path to a binary. The decoder's identity (kind and version) is part of the cache key of every stage
that decodes and of the outputs' provenance, so a change of decoder recomputes instead of mixing clips
decoded by two builds in one features folder.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from avemo.errors import AvemoError

BUNDLED = "bundled"
SYSTEM = "system"


class DecoderError(AvemoError):
    """The ffmpeg that ``preprocess.audio.ffmpeg`` names cannot be found or run."""


@dataclass(frozen=True)
class Decoder:
    kind: str  # bundled, system or path
    path: str
    version: str  # as ``ffmpeg -version`` prints it

    def identity(self) -> dict[str, str]:
        """What a stage's cache key holds: a different build recomputes, a moved binary does not."""
        return {"ffmpeg": self.kind, "ffmpeg_version": self.version}

    def describe(self) -> str:
        return f"ffmpeg {self.version} ({self.kind}, {self.path})"


@functools.cache
def decoder(setting: str = BUNDLED) -> Decoder:
    """The decoder a ``preprocess.audio.ffmpeg`` setting names, resolved and its version read once."""
    if setting == BUNDLED:
        import imageio_ffmpeg

        return Decoder(BUNDLED, imageio_ffmpeg.get_ffmpeg_exe(), _version(imageio_ffmpeg.get_ffmpeg_exe()))
    if setting == SYSTEM:
        found = shutil.which("ffmpeg")
        if found is None:
            raise DecoderError(
                "preprocess.audio.ffmpeg is 'system' but no ffmpeg is on PATH: install one, or set it to 'bundled'"
            )
        return Decoder(SYSTEM, found, _version(found))
    path = Path(setting).expanduser()
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise DecoderError(
            f"preprocess.audio.ffmpeg names {path}, which is not an executable file; "
            "give the path of an ffmpeg binary, or 'bundled' or 'system'"
        )
    return Decoder("path", str(path.resolve()), _version(str(path)))


def ffmpeg_exe(setting: str = BUNDLED) -> str:
    return decoder(setting).path


def _version(path: str) -> str:
    try:
        out = subprocess.run([path, "-version"], capture_output=True, text=True, check=False, timeout=30).stdout
    except OSError as err:
        raise DecoderError(f"{path} does not run: {err}") from err
    match = re.match(r"ffmpeg version (\S+)", out)
    if match is None:
        raise DecoderError(f"{path} is not ffmpeg: `{path} -version` does not print an ffmpeg version")
    return match.group(1)


# Errors of ffmpeg's output side (its muxer writing to a pipe avemo closed once it had the frames it
# needed) are not about the source: only input, demuxer and decoder messages count.
_OUTPUT_SIDE = re.compile(r"^\[(out|vost|aost)#|Broken pipe")


def count_decode_errors(stderr: str) -> int:
    """How many errors ffmpeg logged (``-loglevel error``) reading the source, counting its "Last message
    repeated N times" and leaving out its output side's."""
    count, last_counted = 0, False
    for line in stderr.splitlines():
        repeated = re.search(r"Last message repeated (\d+) times", line)
        if repeated:
            count += int(repeated.group(1)) if last_counted else 0
        elif line.strip():
            last_counted = _OUTPUT_SIDE.search(line.strip()) is None
            count += last_counted
    return count
