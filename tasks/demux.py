"""Demux with ffmpeg-python: audio to mono PCM at one rate, video frames streamed at the native rate.

Video frames come one at a time through a pipe so a long video never sits whole in memory; a caller
keeps only the frames it asks for. ``ffmpeg`` is ``preprocess.audio.ffmpeg`` (see ``avemo.ffmpeg``). A
stream that decodes with errors (a corrupt middle ffmpeg skips over) still gives its samples or frames,
with the count of errors ffmpeg logged, so the clip is flagged rather than passed as clean.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from avemo.ffmpeg import BUNDLED, count_decode_errors, ffmpeg_exe


class DemuxError(RuntimeError):
    """ffmpeg could not decode the stream."""


def _stderr_tail(stderr: bytes) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else "no message"


@dataclass(frozen=True)
class DecodedAudio:
    signal: np.ndarray  # mono float32 in [-1, 1]
    errors: int  # errors ffmpeg logged while decoding (0: clean)


def load_audio(path: Path, sample_rate: int, ffmpeg_setting: str = BUNDLED) -> DecodedAudio:
    """Decode the first audio stream to mono float32 in [-1, 1] at ``sample_rate`` Hz.

    ffmpeg mixes the channels down (``ac=1``: their mean) and resamples, as the AVEF paper's channel
    averaging asks.
    """
    try:
        out, err_out = (
            ffmpeg.input(str(path))
            .output("pipe:", format="s16le", acodec="pcm_s16le", ac=1, ar=sample_rate, map="0:a:0")
            .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
            .run(cmd=ffmpeg_exe(ffmpeg_setting), capture_stdout=True, capture_stderr=True)
        )
    except ffmpeg.Error as err:
        raise DemuxError(f"audio decoding failed: {_stderr_tail(err.stderr)}") from err
    signal = np.frombuffer(out, dtype="<i2").astype(np.float32) / 32768.0
    return DecodedAudio(signal, count_decode_errors(err_out.decode("utf-8", "replace")))


def _scaling(native_size: tuple[int, int] | None, width: int, height: int) -> dict[str, str]:
    """Area averaging where frames are decoded smaller than ``native_size`` (MTCNN resamples its
    pyramid the same way); at the native size, ffmpeg's default conversion, which features rely on."""
    if native_size is None or native_size == (width, height):
        return {}
    return {"flags": "area"}


@dataclass
class DecodeLog:
    """Filled in by :func:`iter_video_frames` once its frames are read: the errors ffmpeg logged."""

    errors: int = 0


@dataclass(frozen=True)
class VideoFrame:
    index: int  # frame number at the video's native rate, from 0
    t: float  # seconds from the start of the clip
    rgb: np.ndarray  # H x W x 3 uint8


def iter_video_frames(
    path: Path,
    fps: float,
    width: int,
    height: int,
    wanted: Iterable[int] | None = None,
    ffmpeg_setting: str = BUNDLED,
    log: DecodeLog | None = None,
    native_size: tuple[int, int] | None = None,
) -> Iterator[VideoFrame]:
    """Yield the video's frames at a constant ``fps`` (the native rate), optionally only ``wanted`` ones,
    ``width`` x ``height`` pixels: the native size, or, with ``native_size`` larger, averaged down to it.

    Frames are read from ffmpeg's pipe one by one; unwanted frames are read and discarded, so memory
    stays at one frame whatever the video's length. Decoding stops after the last wanted frame.
    """
    wanted_set = None if wanted is None else set(wanted)
    last_wanted = max(wanted_set) if wanted_set else None
    if wanted_set is not None and not wanted_set:
        return
    frame_bytes = width * height * 3
    process = (
        ffmpeg.input(str(path))["v:0"]
        .filter("fps", fps=fps)
        .filter("scale", width, height, **_scaling(native_size, width, height))
        .output("pipe:", format="rawvideo", pix_fmt="rgb24")
        .global_args("-nostdin", "-hide_banner", "-loglevel", "error")
        .run_async(cmd=ffmpeg_exe(ffmpeg_setting), pipe_stdout=True, pipe_stderr=True)
    )
    index = 0
    try:
        while True:
            buffer = process.stdout.read(frame_bytes)
            if len(buffer) < frame_bytes:
                break
            if wanted_set is None or index in wanted_set:
                rgb = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)
                yield VideoFrame(index=index, t=index / fps, rgb=rgb)
            if last_wanted is not None and index >= last_wanted:
                break
            index += 1
    finally:
        process.stdout.close()
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        stderr = process.stderr.read()
        process.stderr.close()
        process.wait()
    if index == 0 and stderr:
        raise DemuxError(f"video decoding failed: {_stderr_tail(stderr)}")
    if log is not None:
        log.errors += count_decode_errors(stderr.decode("utf-8", "replace"))
