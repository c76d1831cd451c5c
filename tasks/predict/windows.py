"""Long files a window at a time, in bounded memory.

``tasks.video.faces`` streams video frames already, but a file's features (decoded audio, spectrogram,
log-mel images, face crops, embeddings) grow with its length. A file longer than ``window_s`` is
therefore processed one window at a time. A window is a copy of the file's streams from a start on the
segment and VAD grid (the video stream copied without re-encoding, MOV edit lists making the decoder
start at the exact frame; a lossless re-encode where MOV cannot hold the codec), cut just long enough to
hold the segments starting in it: the windows' segments are the whole file's, each in exactly one
window. VAD smoothing and face tracking restart at window starts. Clip models see each window as a
clip, and the file's posterior is the windows' posteriors averaged, weighted by their kept segments. A
file no longer than one window is processed whole, exactly as ``avemo preprocess`` processes a clip.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avemo.config import PreprocessParams
from avemo.ffmpeg import ffmpeg_exe
from tasks.audio.segment import samples_per
from tasks.clip import ClipFeatures, ClipSource, StageFailure, clip_features
from tasks.predict.compatibility import PredictError, Predictor, check_media
from tasks.predict.scoring import load_clip_features, score_clip
from tasks.probe import MediaInfo, probe, sha256_file


@dataclass(frozen=True)
class Window:
    start_s: float
    length_s: float | None  # None: the whole file, processed as it is


def plan_windows(duration_s: float | None, params: PreprocessParams, window_s: float) -> list[Window]:
    """Windows starting on the segment and VAD grid, each cut just long enough for the segments starting
    in it and too short for the next window's first, so every segment of the file is in one window.

    Windows start every ``window_s`` rounded down to that grid (1.02 s by default: 59.16 s for 60 s).
    """
    rate = params.audio.sample_rate
    seg = params.segment
    hop = samples_per(seg.hop_ms, rate)
    stride = seg.stride_frames * hop
    grid = math.lcm(stride, samples_per(params.vad.frame_ms, rate))
    step = max(1, round(window_s * rate) // grid) * grid
    segment_length = samples_per(seg.window_ms, rate) + (seg.frames - 1) * hop
    length = step + segment_length - stride // 2  # the last own segment ends stride/2 before the cut
    if duration_s is None or duration_s * rate <= length:
        return [Window(0.0, None)]
    return [Window(k * step / rate, length / rate) for k in range(math.ceil(duration_s * rate / step))]


def cut_window(file: Path, window: Window, with_video: bool, folder: Path) -> Path:
    """The window as a file of its own: audio as float PCM, video copied (or losslessly re-encoded)."""
    command = [
        ffmpeg_exe(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-ss",
        f"{window.start_s:.6f}",
        "-t",
        f"{window.length_s:.6f}",
        "-i",
        str(file),
        "-map",
        "0:a:0",
        "-c:a",
        "pcm_f32le",
    ]
    if not with_video:
        attempts = [[str(folder / "window.wav")]]
    else:
        attempts = [
            ["-map", "0:v:0", "-c:v", "copy", str(folder / "window.mov")],
            ["-map", "0:v:0", "-c:v", "libx264", "-preset", "ultrafast", "-qp", "0", str(folder / "window.mkv")],
        ]
    for attempt in attempts:
        result = subprocess.run([*command, *attempt], capture_output=True, text=True, errors="replace", check=False)
        if result.returncode == 0:
            return Path(attempt[-1])
    last = result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "no message"
    raise PredictError(f"{file}: ffmpeg could not cut the window at {window.start_s:.2f} s ({last})")


@dataclass(frozen=True)
class SegmentRow:
    segment: int  # 0.. over the file's kept segments
    t_begin: float  # seconds in the file
    t_end: float
    emotion: str
    probabilities: tuple[float, ...]  # in the predictor's class order
    face_found: bool | None  # a face in any of its frames; None where faces were not searched
    voiced_share: float


@dataclass(frozen=True)
class SkippedWindow:
    start_s: float
    stage: str
    reason: str


@dataclass(frozen=True)
class FilePrediction:
    file: Path
    sha256: str
    duration_s: float  # of the decoded audio
    has_video: bool
    voiced_share: float  # VAD frames voiced / all
    emotion: str
    probabilities: tuple[float, ...]
    segments: tuple[SegmentRow, ...]
    windows: int
    skipped_windows: tuple[SkippedWindow, ...]  # windows without a kept segment (silence, a short tail)


@dataclass(frozen=True)
class FileFailure:
    file: Path
    stage: str
    reason: str


def _rows(
    clip: ClipFeatures,
    offset: float,
    first: int,
    probabilities: np.ndarray,
    classes: Sequence[str],
    faces_per_segment: int,
) -> list[SegmentRow]:
    table = clip.segments
    no_face = table["n_no_face"].to_pylist()
    return [
        SegmentRow(
            segment=first + k,
            t_begin=offset + begin,
            t_end=offset + end,
            emotion=classes[int(np.argmax(p))],
            probabilities=tuple(float(x) for x in p),
            face_found=None if missing is None else missing < faces_per_segment,
            voiced_share=float(voiced),
        )
        for k, (begin, end, voiced, missing, p) in enumerate(
            zip(
                table["t_begin"].to_pylist(),
                table["t_end"].to_pylist(),
                table["voiced_share"].to_pylist(),
                no_face,
                probabilities,
                strict=True,
            )
        )
    ]


@dataclass(frozen=True)
class _WindowResult:
    rows: list[SegmentRow]
    posterior: np.ndarray  # (classes,)
    duration_s: float  # of the window's decoded audio
    voiced_share: float


def _predict_window(
    predictor: Predictor,
    source: ClipSource,
    window: Window,
    first_segment: int,
    with_video: bool,
    batch_size: int,
    folder: Path,
) -> _WindowResult | StageFailure:
    """One window's timeline rows and posterior. Its features are dropped on return, so a long file never
    holds more than one window's."""
    params = predictor.params
    clip = clip_features(source, params, with_faces=with_video)
    if isinstance(clip, StageFailure):
        return clip
    features = load_clip_features(clip, params, predictor, folder)
    posterior, segment_posteriors = score_clip(predictor, clip, features, batch_size)
    rows = _rows(
        clip, window.start_s, first_segment, segment_posteriors, predictor.classes, params.faces.frames_per_segment
    )
    return _WindowResult(rows, posterior, clip.clip["duration_s"], clip.clip["voiced_share"])


def predict_file(
    predictor: Predictor,
    file: Path,
    *,
    window_s: float = 60.0,
    batch_size: int = 32,
    info: MediaInfo | None = None,
    on_window: Callable[[], None] | None = None,
) -> FilePrediction | FileFailure:
    """The file's emotion and segment timeline; a FileFailure when no window has a kept segment or a
    stage fails (raises PredictError for a file the predictor cannot use at all, see :func:`check_media`)."""
    file = Path(file)
    info = info or check_media(predictor, file)
    params = predictor.params
    with_video = "video" in predictor.needs and info.has_video
    sha256 = sha256_file(file)
    windows = plan_windows(info.duration_s, params, window_s)
    rows: list[SegmentRow] = []
    posteriors, weights, skipped = [], [], []
    duration, voiced_time = 0.0, 0.0
    with tempfile.TemporaryDirectory(prefix="avemo-predict-") as tmp:
        for k, window in enumerate(windows):
            folder = Path(tmp) / f"window-{k}"
            folder.mkdir()
            media = file if window.length_s is None else cut_window(file, window, with_video, folder)
            source = ClipSource(
                clip_id=file.stem,
                path=str(file),
                file=media,
                sha256=sha256,
                corpus="predict",
                speaker=file.stem,
                label="",
                corpus_label="",
                info=info if media == file else probe(media),
            )
            outcome = _predict_window(predictor, source, window, len(rows), with_video, batch_size, folder)
            if isinstance(outcome, StageFailure):
                # one window without speech, or a tail past the audio's end, does not fail a long file
                if len(windows) > 1 and outcome.stage in ("segment", "demux"):
                    skipped.append(SkippedWindow(window.start_s, outcome.stage, outcome.reason))
                else:
                    return FileFailure(file, outcome.stage, outcome.reason)
            else:
                rows += outcome.rows
                posteriors.append(outcome.posterior)
                weights.append(len(outcome.rows))
                duration = max(duration, window.start_s + outcome.duration_s)
                voiced_time += outcome.voiced_share * outcome.duration_s
            shutil.rmtree(folder)  # a long file never keeps more than one window on disk
            if on_window is not None:
                on_window()
    if not posteriors:
        first = skipped[0]
        return FileFailure(file, first.stage, f"no window has a kept speech segment; the first says: {first.reason}")
    probabilities = np.average(np.stack(posteriors), axis=0, weights=weights)
    return FilePrediction(
        file=file,
        sha256=sha256,
        duration_s=duration,
        has_video=info.has_video,
        voiced_share=min(1.0, voiced_time / duration),
        emotion=predictor.classes[int(np.argmax(probabilities))],
        probabilities=tuple(float(p) for p in probabilities),
        segments=tuple(rows),
        windows=len(windows),
        skipped_windows=tuple(skipped),
    )
