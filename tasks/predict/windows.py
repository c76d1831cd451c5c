"""Files a window at a time: features made and kept on disk, then scored.

``tasks.video.faces`` streams video frames already, but a file's features (decoded audio, spectrogram,
log-mel images, face crops, embeddings) grow with its length. A file longer than ``window_s`` is
therefore processed one window at a time, each window's features written as Parquet tables and read
back one window at a time to be scored, so memory stays bounded; disk holds a file's features (a
speaker's, for a speaker-normalised model) until it is scored. A window is a copy of the file's streams
from a start on the segment and VAD grid (the video stream copied without re-encoding, MOV edit lists
making the decoder start at the exact frame; a lossless re-encode where MOV cannot hold the codec), cut
just long enough to hold the segments starting in it: the windows' segments are the whole file's, each
in exactly one window. VAD smoothing and face tracking restart at window starts. A file no longer than
one window is processed whole, exactly as ``avemo preprocess`` processes a clip.
"""

from __future__ import annotations

import math
import subprocess
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from avemo.config import PreprocessParams
from avemo.ffmpeg import ffmpeg_exe
from tasks.audio.segment import samples_per
from tasks.clip import ClipFeatures, ClipSource, StageFailure, clip_features
from tasks.learning.features import Features, load_features
from tasks.learning.standardization import RunningStandardization, Standardization
from tasks.predict.compatibility import PredictError, Predictor
from tasks.predict.scoring import score_clip, write_clip_features
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


def cut_window(file: Path, window: Window, with_video: bool, folder: Path, ffmpeg_setting: str) -> Path:
    """The window as a file of its own: audio as float PCM, video copied (or losslessly re-encoded), by the
    decoder the features were made with."""
    command = [
        ffmpeg_exe(ffmpeg_setting),
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


# How a file's features were standardised (docs/predict.md): a model fitted with global statistics
# keeps them; a speaker-normalised one standardises each speaker over its own files, as evaluation does.
STANDARDISATIONS = {
    "training_clips": "the training clips' statistics, kept in the checkpoint",
    "speaker": "the speaker's own statistics, over its files predicted in this run, as evaluation does",
    "typical_speaker": "a typical training speaker's statistics, kept in the checkpoint: the speaker is not known",
    "own_file": "the file's own statistics: the speaker is not known and the checkpoint predates stored "
    "training-speaker statistics",
}


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
    speaker: str | None  # None: not known
    standardisation: str  # a key of STANDARDISATIONS


@dataclass(frozen=True)
class FileFailure:
    file: Path
    stage: str
    reason: str


@dataclass(frozen=True)
class ExtractedWindow:
    """A window's features, as Parquet tables in ``folder``, and the few columns its timeline needs."""

    window: Window
    folder: Path
    timeline: ClipFeatures  # the clip row and segment columns of the timeline, without feature arrays
    first_segment: int  # the file's index of its first kept segment


@dataclass(frozen=True)
class ExtractedFile:
    """A file whose features are made and waiting to be scored (after its speaker's statistics)."""

    file: Path
    sha256: str
    info: MediaInfo
    windows: tuple[ExtractedWindow, ...]
    planned: int  # windows planned; the others were skipped
    skipped: tuple[SkippedWindow, ...]

    def features(self, predictor: Predictor) -> Iterator[tuple[ExtractedWindow, Features]]:
        """Each window's features, read back as training reads them, one window in memory at a time."""
        for window in self.windows:
            yield window, load_features(window.folder, predictor.needs, predictor.input_kind, predictor.frontend)


# The columns of a clip and of its segments that the timeline and the segment spans read.
_TIMELINE_CLIP = ("clip_id", "path", "duration_s", "voiced_share", "linear_times")
_TIMELINE_SEGMENTS = ("segment", "t_begin", "t_end", "voiced_share", "n_no_face", "face_frames")


def _timeline(clip: ClipFeatures) -> ClipFeatures:
    frames = clip.frames.select(["frame_index"]) if clip.frames is not None else None
    return ClipFeatures(
        clip={name: clip.clip[name] for name in _TIMELINE_CLIP},
        segments=clip.segments.select(list(_TIMELINE_SEGMENTS)),
        frames=frames,
        frontends={},
        seconds={},
        cached={},
    )


def _window_source(file: Path, media: Path, sha256: str, info: MediaInfo) -> ClipSource:
    return ClipSource(
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


def extract_file(
    predictor: Predictor,
    file: Path,
    info: MediaInfo,
    folder: Path,
    *,
    window_s: float = 60.0,
    on_window: Callable[[], None] | None = None,
) -> ExtractedFile | FileFailure:
    """The file's features, a window at a time, written to ``folder`` (one sub-folder per window); a
    FileFailure when no window has a kept segment or a stage fails."""
    with_video = "video" in predictor.needs and info.has_video
    sha256 = sha256_file(file)
    planned = plan_windows(info.duration_s, predictor.params, window_s)
    windows: list[ExtractedWindow] = []
    skipped: list[SkippedWindow] = []
    segments = 0
    for k, window in enumerate(planned):
        window_folder = folder / f"window-{k}"
        window_folder.mkdir(parents=True)
        media = (
            file
            if window.length_s is None
            else cut_window(file, window, with_video, window_folder, predictor.params.audio.ffmpeg)
        )
        clip = clip_features(_window_source(file, media, sha256, info), predictor.params, with_faces=with_video)
        if media != file:
            media.unlink()  # the cut is not needed once its features are made
        if on_window is not None:
            on_window()
        if isinstance(clip, StageFailure):
            # one window without speech, or a tail past the audio's end, does not fail a long file
            if len(planned) > 1 and clip.stage in ("segment", "demux"):
                skipped.append(SkippedWindow(window.start_s, clip.stage, clip.reason))
                continue
            return FileFailure(file, clip.stage, clip.reason)
        write_clip_features(clip, predictor.params, window_folder)
        windows.append(ExtractedWindow(window, window_folder, _timeline(clip), segments))
        segments += clip.segments.num_rows
    if not windows:
        first = skipped[0]
        return FileFailure(file, first.stage, f"no window has a kept speech segment; the first says: {first.reason}")
    return ExtractedFile(file, sha256, info, tuple(windows), len(planned), tuple(skipped))


def file_statistics(predictor: Predictor, files: Sequence[ExtractedFile]) -> Standardization:
    """The statistics of every window of ``files``: a speaker's, as evaluation fits a test speaker's."""
    running = RunningStandardization()
    for extracted in files:
        for _, features in extracted.features(predictor):
            running.add(features, features.clip_ids)
    return running.result()


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


def score_file(
    predictor: Predictor,
    extracted: ExtractedFile,
    speaker_stats: Standardization | None,
    *,
    speaker: str | None,
    standardisation: str,
    batch_size: int = 32,
) -> FilePrediction:
    """The file's emotion and segment timeline from its extracted windows. Clip models see each window
    as a clip, and the file's posterior is the windows' averaged, weighted by their kept segments.

    ``speaker_stats`` standardise a speaker-normalised model's inputs (None: each checkpoint's typical
    training speaker); a model with training-clip statistics keeps its own."""
    rows: list[SegmentRow] = []
    posteriors, weights = [], []
    duration, voiced_time = 0.0, 0.0
    faces_per_segment = predictor.params.faces.frames_per_segment
    for window, features in extracted.features(predictor):
        posterior, segment_posteriors = score_clip(predictor, window.timeline, features, speaker_stats, batch_size)
        rows += _rows(
            window.timeline,
            window.window.start_s,
            window.first_segment,
            segment_posteriors,
            predictor.classes,
            faces_per_segment,
        )
        posteriors.append(posterior)
        weights.append(window.timeline.segments.num_rows)
        clip = window.timeline.clip
        duration = max(duration, window.window.start_s + clip["duration_s"])
        voiced_time += clip["voiced_share"] * clip["duration_s"]
    probabilities = np.average(np.stack(posteriors), axis=0, weights=weights)
    return FilePrediction(
        file=extracted.file,
        sha256=extracted.sha256,
        duration_s=duration,
        has_video=extracted.info.has_video,
        voiced_share=min(1.0, voiced_time / duration),
        emotion=predictor.classes[int(np.argmax(probabilities))],
        probabilities=tuple(float(p) for p in probabilities),
        segments=tuple(rows),
        windows=extracted.planned,
        skipped_windows=extracted.skipped,
        speaker=speaker,
        standardisation=standardisation,
    )
