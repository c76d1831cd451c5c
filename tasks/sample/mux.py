"""A sample clip's frames and audio into one mp4, bit-exactly (single-threaded, bitexact flags) and atomically."""

from __future__ import annotations

import functools
import os
import subprocess
import threading
from pathlib import Path

import ffmpeg
import numpy as np

from avemo.ffmpeg import ffmpeg_exe
from tasks.sample.styles import FPS, SAMPLE_RATE, SampleError


@functools.cache
def video_encoder_options() -> dict[str, str | int]:
    """libx264 where the ffmpeg binary has it (H.264, what real corpora ship), else MPEG-4 part 2."""
    listing = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, text=True, check=False
    ).stdout
    if " libx264 " in listing:
        return {"vcodec": "libx264", "preset": "veryfast", "crf": 20}
    return {"vcodec": "mpeg4", "q:v": 3}


def _mux_command(out: Path, width: int, height: int, sample_rate: int, audio_fd: int) -> list[str]:
    """ffmpeg reading RGB frames from stdin and float audio from the pipe ``audio_fd``, writing ``out``."""
    video_in = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{width}x{height}", r=FPS)
    audio_in = ffmpeg.input(f"pipe:{audio_fd}", format="f32le", ar=sample_rate, ac=1)
    return (
        ffmpeg.output(
            video_in.video,
            audio_in.audio,
            str(out),
            pix_fmt="yuv420p",
            acodec="aac",
            ar=sample_rate,
            ac=1,
            audio_bitrate="64k",
            threads=1,
            map_metadata=-1,
            **video_encoder_options(),
            **{"flags:v": "+bitexact", "flags:a": "+bitexact", "fflags": "+bitexact"},
        )
        .global_args("-hide_banner", "-loglevel", "error", "-y")
        .compile(cmd=ffmpeg_exe())
    )


def mux_clip(path: Path, frames: np.ndarray, audio: np.ndarray, sample_rate: int = SAMPLE_RATE) -> None:
    """Encode RGB ``frames`` and float ``audio`` into an mp4 at ``path``, atomically and bit-exactly.

    Frames go through ffmpeg's stdin and audio through a second pipe, fed by a thread so neither
    pipe can stall the other; nothing but the finished clip touches the disk. The clip is written
    under a temporary name and renamed at the end, so an interrupted run never leaves a truncated
    clip behind.
    """
    n_frames, height, width, _ = frames.shape
    audio_read, audio_write = os.pipe()
    partial = path.with_name(f".{path.stem}.partial.mp4")
    command = _mux_command(partial, width, height, sample_rate, audio_read)
    try:
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(audio_read,))
    except OSError:
        os.close(audio_write)
        raise
    finally:
        os.close(audio_read)
    assert process.stdin is not None and process.stderr is not None  # both opened as pipes above

    def feed_audio() -> None:
        try:
            with os.fdopen(audio_write, "wb") as pipe:
                pipe.write(audio.astype("<f4").tobytes())
        except BrokenPipeError:
            pass  # ffmpeg stopped early; its stderr says why

    feeder = threading.Thread(target=feed_audio, daemon=True)
    feeder.start()
    try:
        process.stdin.write(np.ascontiguousarray(frames).tobytes())
        process.stdin.close()
    except BrokenPipeError:
        pass  # ffmpeg stopped early; its stderr below says why
    messages = process.stderr.read().decode("utf-8", "replace").strip().splitlines()
    process.wait()
    feeder.join()
    if process.returncode != 0:
        partial.unlink(missing_ok=True)
        reason = messages[0] if messages else "no message"  # the first line names the cause
        raise SampleError(f"ffmpeg could not write {path.name} ({n_frames} frames): {reason}")
    partial.replace(path)
