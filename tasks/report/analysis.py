"""What the evaluation report shows, computed: the outputs of ``avemo evaluate`` and the trained models re-run.

It gathers what ``avemo evaluate`` wrote for each system (metrics per system and fold, confusion
matrices, per-class recall, learning curves) and re-runs the trained models on their own test speakers
for the papers' analysis figures:

- attention weights over the frames of example clips, the spectrogram above (deep-fusion Fig. 5,
  am-fbp Fig. 6): every clip is analysed by the model of the fold that tested it;
- AG-FBP's audio factor mu (am-fbp Eq. 15) averaged per emotion over the test clips (am-fbp Fig. 7);
- a t-SNE map of the clip embeddings the classifier reads (am-fbp Fig. 9). Leave-one-speaker-out has no
  single model, and embeddings of different models live in different spaces, so one map shows the
  first fold's model on every clip, its test speakers drawn filled and its training speakers hollow.

Analysis uses the first checkpoint (by file name) of each fold, i.e. one seed of an ensemble. Only
numbers here (numpy, torch, scikit-learn): ``figures`` draws them, ``sections`` and ``html`` lay out the page.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import DataLoader

from avemo import schemas
from avemo.config import ReportParams
from avemo.errors import AvemoError
from avemo.parquet_io import read_table
from models.fbp import AudioEncoder
from models.registry import get_spec
from tasks.learning.checkpoints import load_trained
from tasks.learning.datasets import collate_clips, collate_for, make_dataset
from tasks.learning.features import Features, TaskLabels
from tasks.learning.inference import min_audio_frames, model_device, trained_posteriors
from tasks.learning.standardization import speaker_standardization
from tasks.learning.trained import Trained

MIN_TSNE_CLIPS = 5  # fewer points make no map

# An example clip's raw spectrogram (T, bins), its frame times (T,) and its face frames' times (L,).
ExampleData = tuple[np.ndarray, np.ndarray, np.ndarray]


class ReportError(AvemoError):
    """Evaluation or model outputs the report cannot be built from."""


# --- what avemo evaluate wrote ---------------------------------------------------------------------


@dataclass(frozen=True)
class SystemEvaluation:
    system: str
    metrics: dict[str, Any]  # metrics.json
    report: dict[str, Any]  # report.json: per fold and pooled reports, classes
    learning_curve: list[dict[str, Any]]  # learning_curve.csv rows, numbers parsed
    predicted: dict[str, str]  # clip -> predicted label (seeds averaged)

    @property
    def classes(self) -> list[str]:
        return list(self.report["classes"])


def _number(text: str) -> float | str | None:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


def load_evaluation(eval_dir: Path, system: str) -> SystemEvaluation:
    """The outputs of ``avemo evaluate --system SYSTEM`` in ``eval_dir``."""
    eval_dir = Path(eval_dir)
    missing = [
        n
        for n in ("metrics.json", "report.json", "learning_curve.csv", "predictions.parquet")
        if not (eval_dir / n).exists()
    ]
    if missing:
        raise ReportError(f"{eval_dir} lacks {', '.join(missing)}; run `avemo evaluate --system {system}` first")
    with (eval_dir / "learning_curve.csv").open(newline="") as handle:
        curve = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(handle)]
    predictions = read_table(eval_dir / "predictions.parquet", schemas.PREDICTIONS, columns=["clip_id", "predicted"])
    return SystemEvaluation(
        system,
        json.loads((eval_dir / "metrics.json").read_text()),
        json.loads((eval_dir / "report.json").read_text()),
        curve,
        dict(zip(predictions["clip_id"].to_pylist(), predictions["predicted"].to_pylist(), strict=True)),
    )


# --- what the trained models compute besides their decisions ---------------------------------------


@dataclass(frozen=True)
class ClipAnalysis:
    """Per clip: the embedding the classifier reads and, where the model has them, its attention weights
    over the valid frames (padding cut off, each summing to one) and AG-FBP's audio factor mu."""

    clip_ids: tuple[str, ...]
    embeddings: np.ndarray  # (n, E)
    audio_frames: np.ndarray | None = None  # (n,) spectrogram frames the model read (short clips padded)
    audio_weights: tuple[np.ndarray, ...] | None = None  # per clip (T',): over the audio encoder's steps
    video_weights: tuple[np.ndarray, ...] | None = None  # per clip (L,): over face frames
    mu: np.ndarray | None = None  # (n,)

    @property
    def has_attention(self) -> bool:
        return self.audio_weights is not None or self.video_weights is not None


def _dataset(trained: Trained, features: Features, labels: TaskLabels, clip_ids: Sequence[str]):
    """The model's inputs for ``clip_ids``, prepared as its prediction prepares them."""
    stats = trained.standardization or speaker_standardization(features, clip_ids)
    needs = get_spec(trained.model_name).needs
    return make_dataset(features, labels, clip_ids, stats, needs, min_audio_frames(trained.model))


@torch.no_grad()
def clip_model_outputs(
    model: nn.Module, dataset, collate: Callable = collate_clips, batch_size: int = 32
) -> ClipAnalysis:
    """Run a clip or pooled model (FBP family, baselines, classical) over ``dataset``, keeping what its
    ClipOutput holds."""
    model.eval()
    device = model_device(model)
    encoder = next((m for m in model.modules() if isinstance(m, AudioEncoder)), None)
    clip_ids: list[str] = []
    embeddings: list[np.ndarray] = []
    frames: list[int] = []
    audio: list[np.ndarray] = []
    video: list[np.ndarray] = []
    mu: list[np.ndarray] = []
    for batch in DataLoader(dataset, batch_size, collate_fn=collate):
        out = model(**batch.inputs(device))
        clip_ids.extend(batch.clip_ids)
        embeddings.append(out.embedding.float().cpu().numpy())
        if out.audio_weights is not None:
            frames.extend(batch.audio_lengths.tolist())
            assert encoder is not None  # audio weights are over an AudioEncoder's steps
            steps = encoder.output_lengths(batch.audio_lengths).tolist()
            audio.extend(w[:n].double().numpy() for w, n in zip(out.audio_weights.float().cpu(), steps, strict=True))
        if out.video_weights is not None:
            lengths = batch.video_lengths.tolist()
            video.extend(w[:n].double().numpy() for w, n in zip(out.video_weights.float().cpu(), lengths, strict=True))
        if out.mu is not None:
            mu.append(out.mu.float().cpu().numpy())
    return ClipAnalysis(
        tuple(clip_ids),
        np.concatenate(embeddings).astype(np.float64),
        np.asarray(frames, np.int64) if frames else None,
        tuple(audio) if audio else None,
        tuple(video) if video else None,
        np.concatenate(mu).astype(np.float64) if mu else None,
    )


def analyse_clips(trained: Trained, features: Features, labels: TaskLabels, clip_ids: Sequence[str]) -> ClipAnalysis:
    """Embeddings (and, for clip models, attention and mu) of ``clip_ids`` under one trained model.

    Segment models (AVEF) give their clip embedding, the DBN's hidden layer average-pooled over the
    clip's segments, through the evaluation's own prediction path.
    """
    if features.kind == "segment":
        clips = trained_posteriors(trained, features, labels, clip_ids).clips
        return ClipAnalysis(clips.clip_ids, np.asarray(clips.embeddings, np.float64))
    dataset = _dataset(trained, features, labels, clip_ids)
    return clip_model_outputs(trained.model, dataset, collate_for(features.kind))


def concat_analyses(parts: Sequence[ClipAnalysis]) -> ClipAnalysis:
    def joined(name: str):
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else tuple(x for v in values for x in v)

    def stacked(name: str):
        values = [getattr(p, name) for p in parts]
        return None if any(v is None for v in values) else np.concatenate(values)

    return ClipAnalysis(
        tuple(c for p in parts for c in p.clip_ids),
        np.concatenate([p.embeddings for p in parts]),
        stacked("audio_frames"),
        joined("audio_weights"),
        joined("video_weights"),
        stacked("mu"),
    )


@dataclass(frozen=True)
class SystemAnalysis:
    system: str
    test: ClipAnalysis  # every clip by the model of the fold that tested it
    embedding_fold: str  # the fold whose model embedded every clip for t-SNE
    embedded: ClipAnalysis
    roles: tuple[str, ...]  # each embedded clip's role in that fold: train, validation or test


def first_checkpoint(model_dir: Path, fold: str) -> Path:
    paths = sorted(Path(model_dir).glob(f"fold-{fold}-seed*.pt"))
    if not paths:
        raise ReportError(f"no checkpoint of fold {fold} in {model_dir}; run `avemo train` for this system again")
    return paths[0]


def _load(checkpoint: Path, system: str) -> Trained:
    try:
        return load_trained(checkpoint)
    except RuntimeError as err:  # torch's load_state_dict: the model's code changed since training
        reason = str(err).strip().splitlines()[-1].strip()
        raise ReportError(
            f"{checkpoint} does not fit the current code of {system} ({reason}); re-train it with "
            f"`avemo train --system {system}` and `avemo evaluate --system {system}` (dvc repro does both)"
        ) from err


def subset(clip_ids: Sequence[str], limit: int, seed: int) -> list[str]:
    """At most ``limit`` of ``clip_ids``, a fixed random choice kept in the original order."""
    if len(clip_ids) <= limit:
        return list(clip_ids)
    keep = np.random.default_rng(seed).choice(len(clip_ids), limit, replace=False)
    return [clip_ids[i] for i in sorted(keep)]


def analyse_system(
    system: str, model_dir: Path, features: Features, labels: TaskLabels, settings: ReportParams
) -> SystemAnalysis:
    """Each fold's model on its test clips, and the first fold's model on every clip (capped)."""
    folds_path = Path(model_dir) / "folds.parquet"
    if not folds_path.exists():
        raise ReportError(f"{folds_path} not found; run `avemo train --system {system}` first")
    folds = read_table(folds_path, schemas.FOLDS).to_pylist()
    names = list(dict.fromkeys(r["fold"] for r in folds))
    parts, embedded, roles = [], None, ()
    for fold in names:
        trained = _load(first_checkpoint(model_dir, fold), system)
        test = labels.labelled([r["clip_id"] for r in folds if r["fold"] == fold and r["role"] == "test"])
        parts.append(analyse_clips(trained, features, labels, test))
        if fold == names[0]:
            role_of = {r["clip_id"]: r["role"] for r in folds if r["fold"] == fold}
            clips = subset(labels.labelled(features.clip_ids), settings.tsne_max_clips, settings.seed)
            embedded = analyse_clips(trained, features, labels, clips)
            roles = tuple(role_of.get(c, "unused") for c in embedded.clip_ids)
    analysis = concat_analyses(parts)
    assert embedded is not None  # set on the first fold
    return SystemAnalysis(system, analysis, names[0], embedded, roles)


# --- figure data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMean:
    label: str
    mean: float  # nan when no clip has this label
    std: float
    n: int


def mean_by_class(
    values: Sequence[float] | np.ndarray, labels: Sequence[str], classes: Sequence[str]
) -> list[ClassMean]:
    """Mean and standard deviation of ``values`` over the clips of each class (am-fbp Fig. 7)."""
    value_array, label_array = np.asarray(values, np.float64), np.asarray(labels, dtype=object)
    if len(value_array) != len(label_array):
        raise ReportError(f"{len(value_array)} values for {len(label_array)} labels")
    out = []
    for name in classes:
        picked = value_array[label_array == name]
        if len(picked):
            out.append(ClassMean(name, float(picked.mean()), float(picked.std()), len(picked)))
        else:
            out.append(ClassMean(name, math.nan, math.nan, 0))
    return out


def fitted_perplexity(requested: float, n_points: int) -> float:
    """t-SNE's perplexity, lowered to (n - 1) / 3 for few points: it must stay below their number and
    a perplexity near n makes every point everyone's neighbour."""
    return float(max(1.0, min(requested, (n_points - 1) / 3)))


def tsne_coordinates(embeddings: np.ndarray, perplexity: float, seed: int) -> np.ndarray:
    """(n, 2) t-SNE map of the (n, E) embeddings; fixed seed and PCA start, so a re-run draws the same.

    One OpenMP thread: on a busy CPU (or after torch has run in the process) scikit-learn's threads
    made 500 points take 106 s instead of 12.5 s here.
    """
    embeddings = np.asarray(embeddings, np.float64)
    if len(embeddings) < MIN_TSNE_CLIPS:
        raise ReportError(f"t-SNE needs at least {MIN_TSNE_CLIPS} clips, got {len(embeddings)}")
    tsne = TSNE(2, perplexity=fitted_perplexity(perplexity, len(embeddings)), init="pca", random_state=seed)
    with threadpool_limits(1):
        return tsne.fit_transform(embeddings)


@dataclass(frozen=True)
class TsneMap:
    system: str
    fold: str
    coordinates: np.ndarray  # (n, 2)
    labels: tuple[str, ...]
    roles: tuple[str, ...]
    perplexity: float


def audio_step_times(n_steps: int, n_frames: int, frame_times: np.ndarray) -> np.ndarray:
    """Clip time (s) of each audio-encoder step: the centre of the spectrogram frames it spans.

    The encoder maps ``n_frames`` input frames (padded ones included) onto ``n_steps`` steps evenly,
    up to its receptive field, so step j covers frames [j, j + 1) * n_frames / n_steps.
    """
    centres = (np.arange(n_steps) + 0.5) * n_frames / n_steps
    frame_times = np.asarray(frame_times, np.float64)
    return np.interp(np.minimum(centres, len(frame_times) - 1), np.arange(len(frame_times)), frame_times)


def spectrogram_on_time_grid(spectrogram: np.ndarray, frame_times: np.ndarray) -> tuple[np.ndarray, float, float]:
    """(bins, columns) image of the (T, bins) spectrogram on a regular time grid, NaN where segmentation
    dropped frames (silence), with the grid's start time and step: the gaps show what the models skip."""
    frame_times = np.asarray(frame_times, np.float64)
    hop = float(np.median(np.diff(frame_times))) if len(frame_times) > 1 else 0.01
    columns = np.rint((frame_times - frame_times[0]) / hop).astype(np.int64)
    image = np.full((spectrogram.shape[1], columns[-1] + 1), np.nan, np.float32)
    image[:, columns] = np.asarray(spectrogram, np.float32).T
    return image, float(frame_times[0] - hop / 2), hop


@dataclass(frozen=True)
class AttentionCurve:
    system: str
    predicted: str
    audio_times: np.ndarray | None  # (T',) seconds
    audio_weights: np.ndarray | None
    video_times: np.ndarray | None  # (L,) seconds
    video_weights: np.ndarray | None


@dataclass(frozen=True)
class AttentionExample:
    clip_id: str
    label: str
    spectrogram: np.ndarray  # (T, bins) raw
    frame_times: np.ndarray  # (T,)
    curves: list[AttentionCurve] = field(default_factory=list)


def pick_examples(
    candidates: Sequence[str], labels: Mapping[str, str], classes: Sequence[str], count: int, seed: int
) -> list[str]:
    """``count`` clips, one per class in class order (then round again), each a fixed random choice."""
    rng = np.random.default_rng(seed)
    pools = {c: sorted(clip for clip in candidates if labels[clip] == c) for c in classes}
    picked: list[str] = []
    while len(picked) < count and any(pools.values()):
        for name in classes:
            if pools[name] and len(picked) < count:
                picked.append(pools[name].pop(int(rng.integers(len(pools[name])))))
    return picked


def load_example_data(features_dir: Path, features: Features, clip_ids: Sequence[str]) -> dict[str, ExampleData]:
    """clip -> (raw spectrogram (T, bins), its frame times, the face frames' times) for the examples."""
    wanted = set(clip_ids)
    clips = read_table(
        Path(features_dir) / "clips.parquet", schemas.clips_schema(0), columns=["clip_id", "linear_times"]
    )
    times = {
        c: np.asarray(t, np.float64)
        for c, t in zip(clips["clip_id"].to_pylist(), clips["linear_times"].to_pylist(), strict=True)
        if c in wanted
    }
    frames = read_table(
        Path(features_dir) / "frames.parquet", schemas.frames_schema(0, 0), columns=["clip_id", "frame_index", "t"]
    )
    frames = frames.filter(pc.is_in(frames["clip_id"], value_set=pa.array(sorted(wanted), pa.string())))
    frames = frames.sort_by([("clip_id", "ascending"), ("frame_index", "ascending")])
    video_times: dict[str, list[float]] = {}
    for clip, t in zip(frames["clip_id"].to_pylist(), frames["t"].to_pylist(), strict=True):
        video_times.setdefault(clip, []).append(t)
    spectrograms = features.audio
    assert spectrograms is not None  # the caller loads the features with audio
    return {c: (spectrograms[c], times[c], np.asarray(video_times.get(c, []), np.float64)) for c in clip_ids}
