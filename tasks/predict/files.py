"""Emotion timelines of media files from trained checkpoints, through the training pipeline's own code.

One implementation: a file becomes features through ``tasks.clip``'s compute functions, run with
the feature settings stored in the checkpoint; they are written as the very Parquet tables ``avemo
preprocess`` writes (to a temporary folder), read back by ``tasks.learning.datasets.load_features``, and scored by
``tasks.learning.fit.trained_posteriors``, as evaluation scores them. A clip that was in the training features
therefore gets the evaluation's posteriors.

Timeline. Segment models (``avef``, ``avef_audio``, ``avef_video``) score every kept 655 ms segment, and
their clip posterior is evaluation's (the segments' mean, or avef's clip SVM). Clip models (FBP family,
baselines, attention variants) score the whole file for its posterior and, for the timeline, each kept
segment's span as a clip of its own: the spectrogram frames whose centres lie in the segment and the
face embeddings of its frames. A 655 ms span is shorter than the clips these models learnt from, so
their timeline shows where the evidence lies; the file's posterior stays the model's decision.

Bounded memory. ``tasks.video.faces`` streams video frames already, but a file's features (decoded audio,
spectrogram, log-mel images, face crops, embeddings) grow with its length. A file longer than
``window_s`` is therefore processed one window at a time. A window is a copy of the file's streams
from a start on the segment and VAD grid (the video stream copied without re-encoding, MOV edit lists
making the decoder start at the exact frame; a lossless re-encode where MOV cannot hold the codec),
cut just long enough to hold the segments starting in it: the windows' segments are the whole file's,
each in exactly one window. VAD smoothing and face tracking restart at window starts. Clip models see
each window as a clip, and the file's posterior is the windows' posteriors averaged, weighted by their
kept segments. A file no longer than one window is processed whole, exactly as ``avemo preprocess``
processes a clip.

A model folder (``data/models/SYSTEM``) predicts with all its fold and seed checkpoints and averages
their posteriors, as evaluation averages seeds.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from pydantic import ValidationError

import avemo
from avemo import schemas
from avemo.config import PreprocessParams
from avemo.ffmpeg import ffmpeg_exe
from avemo.parquet_io import write_table
from models.registry import MODALITIES, get_spec, models_for
from tasks.audio.segment import samples_per
from tasks.clip import ClipFeatures, ClipSource, StageFailure, clip_features
from tasks.learning.checkpoints import load_checkpoint, load_trained
from tasks.learning.features import Features, TaskLabels, load_features
from tasks.learning.inference import trained_posteriors
from tasks.learning.metrics import average_posteriors
from tasks.learning.standardization import speaker_standardization
from tasks.learning.trained import Trained, TrainError
from tasks.probe import MediaInfo, ProbeError, probe, sha256_file

# The preprocess sections that shape features; the others (folders, workers, runners) do not.
FEATURE_SECTIONS = ("audio", "vad", "segment", "audio_features", "faces", "face_features")
NOT_SHAPING = frozenset({"face_features.batch_size"})  # how many crops per forward pass, not their values
CHECKPOINT_GLOB = "fold-*-seed*.pt"
TIMELINE = {
    "segment": "segment posteriors of the segment model",
    "clip": "each segment's span scored as a clip by the clip model; the file's emotion is the whole file's score",
}


class PredictError(ValueError):
    """A checkpoint, a setting or a media file that prediction cannot use."""


@dataclass(frozen=True)
class Predictor:
    """The model of one checkpoint, or the models of a folder's checkpoints, and the feature settings they read."""

    model_path: Path
    checkpoints: tuple[Path, ...]
    members: tuple[Trained, ...]
    params: PreprocessParams  # the preprocess settings the training features were made with
    trained_with: str  # the avemo version that saved the (first) checkpoint

    @property
    def model_name(self) -> str:
        return self.members[0].model_name

    @property
    def system(self) -> str:
        return str(self.members[0].extra.get("system", self.model_name))

    @property
    def task(self) -> str:
        return self.members[0].task

    @property
    def classes(self) -> tuple[str, ...]:
        return self.members[0].classes

    @property
    def needs(self) -> frozenset[str]:
        return get_spec(self.model_name).needs

    @property
    def input_kind(self) -> str:
        return get_spec(self.model_name).input_kind


def feature_settings(params: PreprocessParams) -> dict[str, Any]:
    """The settings that shape features, by dotted key (``faces.crop_size``)."""
    dump = params.model_dump(include=set(FEATURE_SECTIONS), mode="json")
    flat = {f"{section}.{key}": value for section in FEATURE_SECTIONS for key, value in dump[section].items()}
    return {key: value for key, value in flat.items() if key not in NOT_SHAPING}


def differing_settings(expected: PreprocessParams, given: PreprocessParams) -> dict[str, tuple[Any, Any]]:
    """Dotted key -> (expected, given) for every feature setting that differs."""
    a, b = feature_settings(expected), feature_settings(given)
    return {key: (a[key], b[key]) for key in a if a[key] != b[key]}


def checkpoint_paths(model: Path) -> list[Path]:
    """The checkpoint itself, or every fold and seed checkpoint of a model folder."""
    model = Path(model)
    if model.is_dir():
        paths = sorted(model.glob(CHECKPOINT_GLOB))
        if not paths:
            raise PredictError(
                f"{model} holds no {CHECKPOINT_GLOB} checkpoints; train the system first "
                f"(avemo train --system {model.name}) or pass one checkpoint file"
            )
        return paths
    if not model.exists():
        raise PredictError(
            f"model {model} not found; pass a checkpoint (data/models/SYSTEM/fold-FOLD-seed0.pt) or a model "
            "folder (data/models/SYSTEM)"
        )
    return [model]


def _stored_feature_params(path: Path, meta: dict[str, Any]) -> PreprocessParams:
    stored = meta.get("feature_params")
    if not stored:
        raise PredictError(
            f"{path} does not record the feature settings its model was trained on, so its inputs cannot be "
            "reproduced; re-train it with `avemo train`, which stores them in the checkpoint"
        )
    try:
        return PreprocessParams.model_validate({k: v for k, v in stored.items() if k in FEATURE_SECTIONS})
    except ValidationError as err:
        raise PredictError(
            f"{path}: its stored feature settings are not valid for avemo {avemo.__version__} ({err}); "
            "re-train it with this version"
        ) from err


def load_predictor(model: Path, device: str = "cpu") -> Predictor:
    """Load a checkpoint or a model folder's checkpoints, refusing any without consistent feature settings."""
    paths = checkpoint_paths(model)
    members: list[Trained] = []
    params: PreprocessParams | None = None
    trained_with = "unknown"
    for path in paths:
        try:
            _, meta = load_checkpoint(path)
            own = _stored_feature_params(path, meta)
            trained = load_trained(path, device)
        except TrainError as err:
            raise PredictError(str(err)) from err
        except RuntimeError as err:  # load_state_dict: the network's code changed since the checkpoint
            raise PredictError(
                f"{path}: its weights do not fit this avemo's {meta['model']} network "
                f"({str(err).strip().splitlines()[-1].strip()}); re-train it (avemo train --system "
                f"{meta.get('system', meta['model'])})"
            ) from err
        if params is None:
            params, trained_with = own, str(meta.get("avemo_version", "unknown"))
        else:
            first = members[0]
            if (trained.model_name, trained.task, trained.classes) != (first.model_name, first.task, first.classes):
                raise PredictError(
                    f"{path} is a {trained.model_name} model of {list(trained.classes)} but {paths[0]} is a "
                    f"{first.model_name} model of {list(first.classes)}; a model folder must hold one system's checkpoints"
                )
            differing = differing_settings(params, own)
            if differing:
                raise PredictError(
                    f"{path} and {paths[0]} were trained on features made with different settings "
                    f"({', '.join(differing)}); predict with one of them"
                )
        members.append(trained)
    return Predictor(Path(model), tuple(paths), tuple(members), params, trained_with)


def check_feature_params(predictor: Predictor, params: PreprocessParams, params_file: Path) -> None:
    """Refuse settings whose features would differ from those the model was trained on."""
    differing = differing_settings(predictor.params, params)
    if differing:
        listed = "; ".join(
            f"{key}: {ours!r} in the checkpoint, {theirs!r} in {params_file}"
            for key, (ours, theirs) in differing.items()
        )
        raise PredictError(
            f"{predictor.checkpoints[0]} was trained on features made with other preprocess settings than "
            f"{params_file} sets ({listed}). Predict uses the checkpoint's own settings: drop --params "
            f"{params_file}, or preprocess and re-train with it (avemo preprocess; avemo train) to use its settings"
        )


def check_media(predictor: Predictor, file: Path) -> MediaInfo:
    """The file's stream facts, if the predictor can use the file; a clear refusal otherwise."""
    file = Path(file)
    if not file.is_file():
        raise PredictError(f"{file} not found; pass an existing video or audio file")
    try:
        info = probe(file)
    except ProbeError as err:
        raise PredictError(f"{file}: {err}; pass a video or audio file ffmpeg can read") from err
    if not info.has_audio:
        raise PredictError(f"{file} has no audio stream; avemo finds the speech segments in the audio, so it needs one")
    if "video" in predictor.needs and not info.has_video:
        audio_models = ", ".join(models_for({"audio"}))
        needs = " and ".join(m for m in MODALITIES if m in predictor.needs)
        raise PredictError(
            f"{file} has no video stream, but {predictor.model_path} ({predictor.system}) needs {needs}; "
            f"predict it with a model trained on audio only ({audio_models}), e.g. --model data/models/audio"
        )
    return info


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
        ffmpeg_exe(), "-nostdin", "-hide_banner", "-loglevel", "error", "-y",
        "-ss", f"{window.start_s:.6f}", "-t", f"{window.length_s:.6f}", "-i", str(file),
        "-map", "0:a:0", "-c:a", "pcm_f32le",
    ]  # fmt: skip
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


def load_clip_features(clip: ClipFeatures, params: PreprocessParams, predictor: Predictor, folder: Path) -> Features:
    """Write the clip's features as avemo preprocess's Parquet tables and read them as training reads them."""
    document = {"stage": "predict", "source": clip.clip["path"], "avemo_version": avemo.__version__}
    feat, faces = params.audio_features, params.faces
    write_table(
        pa.Table.from_pylist([clip.clip]), folder / "clips.parquet", schemas.clips_schema(feat.linear_bins), document
    )
    segments_schema = schemas.segments_schema(feat.n_mels, params.segment.frames, faces.frames_per_segment)
    write_table(clip.segments, folder / "segments.parquet", segments_schema, document)
    if clip.frames is not None:
        dim = clip.frames["embedding"].type.list_size
        write_table(clip.frames, folder / "frames.parquet", schemas.frames_schema(faces.crop_size, dim), document)
    return load_features(folder, predictor.needs, predictor.input_kind)


def segment_spans(features: Features, clip: ClipFeatures) -> Features:
    """Each kept segment as a clip of its own, for a clip model's timeline: the spectrogram frames whose
    centres lie in the segment's [t_begin, t_end), and the embeddings of its distinct face frames."""
    clip_id = clip.clip["clip_id"]
    table = clip.segments
    ids = tuple(f"{clip_id}#{s}" for s in table["segment"].to_pylist())
    bounds = list(zip(table["t_begin"].to_pylist(), table["t_end"].to_pylist()))
    spectrograms = embeddings = None
    if features.spectrograms is not None:
        times = np.asarray(clip.clip["linear_times"], dtype=np.float64)
        frames = features.spectrograms[clip_id]
        # Frame centres lie on the segments' 10 ms grid or 5 ms off their ends; 1 ms absorbs float32 times.
        tolerance = 1e-3
        spectrograms = {
            span: frames[(times >= begin - tolerance) & (times < end - tolerance)]
            for span, (begin, end) in zip(ids, bounds)
        }
    if features.embeddings is not None:
        frame_order = np.asarray(clip.frames["frame_index"].to_pylist())  # the rows of the clip's embeddings
        rows = features.embeddings[clip_id]
        embeddings = {
            span: rows[np.searchsorted(frame_order, np.unique(indices))]
            for span, indices in zip(ids, table["face_frames"].to_pylist())
        }
    speaker = features.speakers[features.clip_ids.index(clip_id)]
    return Features(
        ids, (speaker,) * len(ids), ("",) * len(ids), features.modalities, "clip", {}, spectrograms, embeddings
    )


def _unlabelled(trained: Trained, clip_ids: Sequence[str]) -> TaskLabels:
    """Prediction's labels: the model's classes; the files have no label, so every true index is a
    placeholder 0 that nothing reports."""
    return TaskLabels(trained.task, trained.classes, dict.fromkeys(clip_ids, 0), {})


def _own_statistics(trained: Trained, features: Features, clip_id: str) -> Trained:
    """A speaker-normalised model standardises each speaker on that speaker's own clips; here the file is
    the speaker, and its segment spans reuse the file's statistics."""
    if trained.standardization is not None:
        return trained
    (stats,) = speaker_standardization(features, [clip_id]).values()
    return dataclasses.replace(trained, standardization=stats)


def score_clip(
    predictor: Predictor, clip: ClipFeatures, features: Features, batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """(classes,) posterior of the clip and (segments, classes) of its segments in segment order, averaged
    over the predictor's models."""
    clip_id = clip.clip["clip_id"]
    spans = segment_spans(features, clip) if predictor.input_kind == "clip" else None
    clip_members, segment_members = [], []
    for member in predictor.members:
        trained = _own_statistics(member, features, clip_id)
        whole = trained_posteriors(trained, features, _unlabelled(trained, [clip_id]), [clip_id], batch_size)
        clip_members.append(whole.clips.probabilities)
        if whole.segments is not None:
            order = np.argsort(whole.segments.segments, kind="stable")
            segment_members.append(whole.segments.probabilities[order])
        else:
            span_ids = list(spans.clip_ids)
            scored = trained_posteriors(trained, spans, _unlabelled(trained, span_ids), span_ids, batch_size)
            segment_members.append(scored.clips.probabilities)
    return average_posteriors(clip_members)[0], average_posteriors(segment_members)


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
                clip_id=file.stem, path=str(file), file=media, sha256=sha256, corpus="predict", speaker=file.stem,
                label="", corpus_label="", info=info if media == file else probe(media),
            )  # fmt: skip
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


def _probabilities(classes: Sequence[str], values: Sequence[float]) -> dict[str, float]:
    return {name: round(value, 4) for name, value in zip(classes, values)}


def predictions_document(predictor: Predictor, results: Sequence[FilePrediction | FileFailure]) -> dict[str, Any]:
    """The JSON output: the model, then per file its emotion, probabilities and segment timeline
    (times in seconds to the millisecond, probabilities to 4 decimals)."""
    classes = predictor.classes
    files = []
    for result in results:
        if isinstance(result, FileFailure):
            files.append({"file": str(result.file), "error": {"stage": result.stage, "reason": result.reason}})
            continue
        files.append(
            {
                "file": str(result.file),
                "sha256": result.sha256,
                "duration_s": round(result.duration_s, 3),
                "has_video": result.has_video,
                "voiced_share": round(result.voiced_share, 4),
                "emotion": result.emotion,
                "probabilities": _probabilities(classes, result.probabilities),
                "windows": result.windows,
                "skipped_windows": [dataclasses.asdict(s) for s in result.skipped_windows],
                "segments": [
                    {
                        "segment": row.segment,
                        "t_begin": round(row.t_begin, 3),
                        "t_end": round(row.t_end, 3),
                        "emotion": row.emotion,
                        "probabilities": _probabilities(classes, row.probabilities),
                        "face_found": row.face_found,
                        "voiced_share": round(row.voiced_share, 4),
                    }
                    for row in result.segments
                ],
            }
        )
    return {
        "model": {
            "path": str(predictor.model_path),
            "system": predictor.system,
            "model": predictor.model_name,
            "task": predictor.task,
            "classes": list(classes),
            "checkpoints": [p.name for p in predictor.checkpoints],
            "trained_with_avemo": predictor.trained_with,
        },
        "avemo_version": avemo.__version__,
        "timeline": TIMELINE[predictor.input_kind],
        "files": files,
    }


def csv_columns(classes: Sequence[str]) -> list[str]:
    return [
        "file",
        "level",
        "segment",
        "t_begin",
        "t_end",
        "emotion",
        *(f"p_{c}" for c in classes),
        "face_found",
        "voiced_share",
        "error",
    ]


def csv_rows(predictor: Predictor, results: Sequence[FilePrediction | FileFailure]) -> list[dict[str, Any]]:
    """The CSV output: per file a ``clip`` row (0 to its duration), its ``segment`` rows, or an ``error`` row."""
    classes = predictor.classes
    out = []
    for result in results:
        if isinstance(result, FileFailure):
            out.append({"file": str(result.file), "level": "error", "error": f"{result.stage}: {result.reason}"})
            continue
        faces = [row.face_found for row in result.segments if row.face_found is not None]
        out.append(
            {
                "file": str(result.file), "level": "clip", "t_begin": 0.0, "t_end": round(result.duration_s, 3),
                "emotion": result.emotion, **{f"p_{c}": v for c, v in _probabilities(classes, result.probabilities).items()},
                "face_found": any(faces) if faces else None, "voiced_share": round(result.voiced_share, 4),
            }
        )  # fmt: skip
        for row in result.segments:
            out.append(
                {
                    "file": str(result.file), "level": "segment", "segment": row.segment,
                    "t_begin": round(row.t_begin, 3), "t_end": round(row.t_end, 3), "emotion": row.emotion,
                    **{f"p_{c}": v for c, v in _probabilities(classes, row.probabilities).items()},
                    "face_found": row.face_found, "voiced_share": round(row.voiced_share, 4),
                }
            )  # fmt: skip
    return out
