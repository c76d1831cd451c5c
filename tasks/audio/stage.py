"""The audio stage of a clip: demux -> VAD -> 655 ms segmentation -> pre-emphasis -> spectrograms.

VAD reads the decoded signal, the spectrograms the pre-emphasised one (see ``tasks.audio.vad``). The
result is the clip's kept segments with their log-mel images, and its FBP spectrogram and voiced share.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from avemo.config import PreprocessParams
from avemo.schemas import fixed_size_rows, tensor_column
from tasks.audio.preemphasis import pre_emphasis
from tasks.audio.segment import segment_clip
from tasks.audio.spectrograms import linear_spectrogram, log_mel_frames, segment_log_mel
from tasks.audio.vad import vad_decisions
from tasks.demux import DemuxError, load_audio
from tasks.probe import MediaInfo
from tasks.stage import StageError, Tables


def compute_audio(file: Path, info: MediaInfo, params: PreprocessParams) -> Tables:
    """Tables ``segments`` (with their log-mel images) and ``clip`` (the FBP spectrogram, voiced share,
    the count of errors ffmpeg logged decoding the audio).

    Raises :class:`StageError` (stage ``demux`` or ``segment``) for a clip without usable speech.
    """
    if not info.has_audio:
        raise StageError("demux", "no audio stream: avemo segments clips on speech, so it needs audio")
    rate = params.audio.sample_rate
    try:
        decoded = load_audio(file, rate, params.audio.ffmpeg)
    except DemuxError as err:
        raise StageError("demux", str(err)) from err
    signal = decoded.signal
    duration = signal.size / rate
    if signal.size == 0:
        raise StageError("demux", "the audio stream decodes to no samples (truncated or empty)")
    voiced = vad_decisions(signal, rate, params.vad)
    segments = segment_clip(signal.size, rate, voiced, params.vad.frame_ms, params.segment)
    if not segments:
        seg = params.segment
        if duration < seg.duration_s:
            reason = f"the clip's audio lasts {duration:.3f} s, shorter than one {seg.duration_s * 1000:.0f} ms segment"
        else:
            reason = (
                f"no segment has a voiced share >= {seg.min_voiced_share} (VAD finds {voiced.mean():.0%} of the "
                f"clip voiced): silent or non-speech audio"
            )
        raise StageError("segment", reason)
    emphasised = pre_emphasis(signal, params.audio.pre_emphasis)
    mel = log_mel_frames(emphasised, rate, params.segment, params.audio_features)
    images = np.stack([segment_log_mel(mel, s, params.segment, params.audio_features) for s in segments])
    times, spectrogram = linear_spectrogram(emphasised, rate, segments, params.segment, params.audio_features)
    segment_table = pa.table(
        {
            "segment": pa.array([s.index for s in segments], pa.int32()),
            "first_frame": pa.array([s.first_frame for s in segments], pa.int32()),
            "t_begin": pa.array([s.t_begin for s in segments], pa.float64()),
            "t_end": pa.array([s.t_end for s in segments], pa.float64()),
            "voiced_share": pa.array([s.voiced_share for s in segments], pa.float32()),
            "log_mel": tensor_column(images),
        }
    )
    bins = params.audio_features.linear_bins
    clip_table = pa.table(
        {
            "duration_s": pa.array([duration], pa.float64()),
            "voiced_share": pa.array([float(voiced.mean())], pa.float32()),
            "decode_errors": pa.array([decoded.errors], pa.int32()),
            "linear_times": pa.array([times.astype(np.float32)], pa.list_(pa.float32())),
            "linear_spectrogram": pa.ListArray.from_arrays(
                pa.array([0, len(spectrogram)], pa.int32()), fixed_size_rows(spectrogram, bins)
            ),
        }
    )
    return {"segments": segment_table, "clip": clip_table}
