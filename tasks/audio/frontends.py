"""The pretrained audio front-ends of a clip: openSMILE's eGeMAPSv02 and ComParE_2016, Whisper's encoder.

Each gives one row for ``frontend_<name>.parquet``: the clip's frames (descriptors every 10 ms, or
encoder frames every 20 ms) with their times, one pooled vector per kept segment (openSMILE's functionals
over the segment's window; Whisper's frames' mean and std within it) and one for the whole clip. The
segments are the audio stage's, so every front-end describes the same 655 ms windows as the log-mel
images. openSMILE reads the file at its own sample rate; Whisper at 16 kHz, its training rate.
"""

from __future__ import annotations

import functools
import threading
from pathlib import Path

import librosa
import numpy as np
import pyarrow as pa

from avemo.config import PreprocessParams
from avemo.device import resolve_device
from avemo.schemas import fixed_size_rows
from tasks.audio import opensmile_features
from tasks.audio.whisper_encoder import SAMPLE_RATE as WHISPER_RATE
from tasks.audio.whisper_encoder import WhisperEncoder, WhisperModel, locate, mean_std
from tasks.demux import DemuxError, load_audio
from tasks.probe import MediaInfo
from tasks.stage import StageError, Tables

_lock = threading.Lock()


@functools.cache
def _encoder(model: WhisperModel, compute_type: str, device: str, threads: int, inter_threads: int) -> WhisperEncoder:
    return WhisperEncoder(model, compute_type, device, threads, inter_threads)


def whisper_encoder(params: PreprocessParams) -> WhisperEncoder:
    """The encoder of ``preprocess.whisper``, loaded once per process, one clip per worker at a time."""
    w = params.whisper
    device = resolve_device(w.device).type
    with _lock:
        return _encoder(locate(w.weights_path), w.compute_type, device, w.threads, params.workers)


def _table(
    times: np.ndarray, frames: np.ndarray, segments: np.ndarray, clip: np.ndarray, perturbed: np.ndarray
) -> pa.Table:
    frame_dim, pooled_dim = frames.shape[1], clip.shape[0]
    return pa.table(
        {
            "frame_times": pa.array([times.astype(np.float32)], pa.list_(pa.float32())),
            "frames": pa.ListArray.from_arrays(
                pa.array([0, len(frames)], pa.int32()), fixed_size_rows(frames, frame_dim)
            ),
            "segment_pooled": pa.ListArray.from_arrays(
                pa.array([0, len(segments)], pa.int32()), fixed_size_rows(segments, pooled_dim)
            ),
            "clip_pooled": fixed_size_rows(clip[None], pooled_dim),
            "perturbed_clip_pooled": pa.ListArray.from_arrays(
                pa.array([0, len(perturbed)], pa.int32()), fixed_size_rows(perturbed, pooled_dim)
            ),
        }
    )


def speed_perturbed(signal: np.ndarray, factor: float) -> np.ndarray:
    """The signal played ``factor`` times as fast (tempo and pitch both, as Kaldi's speed perturbation):
    resampled to ``1 / factor`` of its length and read at the original rate."""
    return librosa.resample(signal, orig_sr=round(1000 * factor), target_sr=1000, res_type="soxr_hq").astype(np.float32)


def _decoded(file: Path, rate: int, ffmpeg_setting: str) -> np.ndarray:
    try:
        signal = load_audio(file, rate, ffmpeg_setting).signal
    except DemuxError as err:
        raise StageError("frontend", str(err)) from err
    if signal.size == 0:
        raise StageError("frontend", "the audio stream decodes to no samples")
    return signal


def compute_frontend(name: str, file: Path, info: MediaInfo, segments: pa.Table, params: PreprocessParams) -> Tables:
    """The front-end ``name``'s table (one row) of the clip whose kept segments are ``segments``."""
    windows = list(zip(segments["t_begin"].to_pylist(), segments["t_end"].to_pylist(), strict=True))
    speeds = params.speed_perturbation
    if name in opensmile_features.FEATURE_SETS:
        rate = info.audio_sample_rate or params.audio.sample_rate
        signal = _decoded(file, rate, params.audio.ffmpeg)
        out = opensmile_features.extract(name, signal, rate, windows)
        perturbed = [opensmile_features.clip_functionals(name, speed_perturbed(signal, f), rate) for f in speeds]
        return {"frontend": _table(out.frame_times, out.frames, out.segments, out.clip, _stacked(perturbed, out.clip))}
    if name == "whisper":
        encoder, pad = whisper_encoder(params), params.whisper.pad_to_s
        signal = _decoded(file, WHISPER_RATE, params.audio.ffmpeg)
        times, frames = encoder.frames(signal, pad)
        pooled = np.stack([mean_std(frames[(times >= begin) & (times < end)]) for begin, end in windows])
        perturbed = [mean_std(encoder.frames(speed_perturbed(signal, f), pad)[1]) for f in speeds]
        clip = mean_std(frames)
        return {"frontend": _table(times, frames, pooled, clip, _stacked(perturbed, clip))}
    raise StageError("frontend", f"unknown audio front-end {name!r}")


def _stacked(vectors: list[np.ndarray], like: np.ndarray) -> np.ndarray:
    return np.stack(vectors) if vectors else np.zeros((0, like.shape[0]), np.float32)


def tool_identity(name: str, params: PreprocessParams) -> dict[str, str]:
    """What besides the code and the settings shapes the front-end's numbers: the openSMILE release, or the
    Whisper model's name and weights' sha256 (its cache key and its provenance)."""
    if name == "whisper":
        model = locate(params.whisper.weights_path)
        return {"model": model.name, "weights_sha256": model.sha256}
    return {"opensmile": opensmile_features.version()}
