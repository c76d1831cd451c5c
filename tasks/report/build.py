"""The evaluation report: one self-contained HTML file, and a PNG copy of each of its figures.

It gathers what ``avemo evaluate`` wrote for each system (metrics per system and fold, confusion
matrices, per-class recall, learning curves) and re-runs the trained models on their own test speakers
for the papers' analysis figures:

- attention weights over the frames of example clips, the spectrogram above (deep-fusion Fig. 5,
  am-fbp Fig. 6): every clip is analysed by the model of the fold that tested it;
- AG-FBP's audio factor mu (am-fbp Eq. 15) averaged per emotion over the test clips (am-fbp Fig. 7);
- a t-SNE map of the clip embeddings the classifier reads (am-fbp Fig. 9). Leave-one-speaker-out has no
  single model, and embeddings of different models live in different spaces, so one map shows the
  first fold's model on every clip, its test speakers drawn filled and its training speakers hollow.

Analysis uses the first checkpoint (by file name) of each fold, i.e. one seed of an ensemble. A figure
that does not apply to a system (no attention in ``avef``, mu only in ``agfbp``/``amfbp``) leaves the
system out with a note in the report. Figures are drawn on matplotlib ``Figure`` objects (Agg, no
pyplot state); the HTML embeds them as base64 PNG and loads nothing else, so it opens offline.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from matplotlib.figure import Figure
from sklearn.manifold import TSNE
from threadpoolctl import threadpool_limits
from torch import nn
from torch.utils.data import DataLoader

import avemo
from avemo import schemas
from avemo.parquet_io import read_table
from avemo.provenance import git_commit, now_iso
from models.fbp import AudioEncoder
from models.registry import get_spec
from tasks.learning.checkpoints import load_trained
from tasks.learning.datasets import collate_clips, make_dataset
from tasks.learning.features import Features, TaskLabels, load_features, task_labels
from tasks.learning.inference import min_audio_frames, trained_posteriors
from tasks.learning.standardization import speaker_standardization
from tasks.learning.trained import Trained

log = logging.getLogger("avemo.report")

MIN_TSNE_CLIPS = 5  # fewer points make no map
PLOT_DPI = 100


class ReportError(ValueError):
    """Evaluation or model outputs the report cannot be built from."""


@dataclass(frozen=True)
class ReportSettings:
    example_clips: int = 2  # clips whose attention curves are drawn
    tsne_perplexity: float = 30.0  # lowered to (clips - 1) / 3 on small corpora
    tsne_max_clips: int = 1000  # a fixed random subset of the clips beyond this
    seed: int = 0  # picks the example clips and the subset, seeds t-SNE


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
    missing = [n for n in ("metrics.json", "report.json", "learning_curve.csv", "predictions.parquet") if not (eval_dir / n).exists()]
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
        dict(zip(predictions["clip_id"].to_pylist(), predictions["predicted"].to_pylist())),
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


def _dataset(trained: Trained, features: Features, labels: TaskLabels, clip_ids: Sequence[str]):
    """The model's inputs for ``clip_ids``, prepared as its prediction prepares them."""
    stats = trained.standardization or speaker_standardization(features, clip_ids)
    needs = get_spec(trained.model_name).needs
    return make_dataset(features, labels, clip_ids, stats, needs, min_audio_frames(trained.model))


@torch.no_grad()
def clip_model_outputs(model: nn.Module, dataset, batch_size: int = 32) -> ClipAnalysis:
    """Run a clip model (FBP family, baselines) over ``dataset``, keeping what its ClipOutput holds."""
    model.eval()
    device = next(model.parameters()).device
    encoder = next((m for m in model.modules() if isinstance(m, AudioEncoder)), None)
    clip_ids: list[str] = []
    embeddings, frames, audio, video, mu = [], [], [], [], []
    for batch in DataLoader(dataset, batch_size, collate_fn=collate_clips):
        out = model(**batch.inputs(device))
        clip_ids.extend(batch.clip_ids)
        embeddings.append(out.embedding.float().cpu().numpy())
        if out.audio_weights is not None:
            frames.extend(batch.audio_lengths.tolist())
            steps = encoder.output_lengths(batch.audio_lengths).tolist()
            audio.extend(w[:n].double().numpy() for w, n in zip(out.audio_weights.float().cpu(), steps))
        if out.video_weights is not None:
            lengths = batch.video_lengths.tolist()
            video.extend(w[:n].double().numpy() for w, n in zip(out.video_weights.float().cpu(), lengths))
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
    return clip_model_outputs(trained.model, _dataset(trained, features, labels, clip_ids))


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
    system: str, model_dir: Path, features: Features, labels: TaskLabels, settings: ReportSettings
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
    return SystemAnalysis(system, concat_analyses(parts), names[0], embedded, roles)


# --- figure data -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassMean:
    label: str
    mean: float  # nan when no clip has this label
    std: float
    n: int


def mean_by_class(values: Sequence[float], labels: Sequence[str], classes: Sequence[str]) -> list[ClassMean]:
    """Mean and standard deviation of ``values`` over the clips of each class (am-fbp Fig. 7)."""
    values, labels = np.asarray(values, np.float64), np.asarray(labels, dtype=object)
    if len(values) != len(labels):
        raise ReportError(f"{len(values)} values for {len(labels)} labels")
    out = []
    for name in classes:
        picked = values[labels == name]
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


def pick_examples(candidates: Sequence[str], labels: Mapping[str, str], classes: Sequence[str], count: int, seed: int) -> list[str]:
    """``count`` clips, one per class in class order (then round again), each a fixed random choice."""
    rng = np.random.default_rng(seed)
    pools = {c: sorted(clip for clip in candidates if labels[clip] == c) for c in classes}
    picked: list[str] = []
    while len(picked) < count and any(pools.values()):
        for name in classes:
            if pools[name] and len(picked) < count:
                picked.append(pools[name].pop(int(rng.integers(len(pools[name])))))
    return picked


# --- drawing -----------------------------------------------------------------------------------------


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return buffer.getvalue()


def line_style(index: int) -> dict[str, str]:
    """Colour and dash of the index-th line: ten colours, then the same with dashes, so up to 30 lines
    on one axis stay apart."""
    return {"color": f"C{index % 10}", "linestyle": ("-", "--", ":")[index // 10 % 3]}


MAX_LEGEND_RUNS = 10  # beyond this many folds x seeds a legend hides the curves


def _grid(n: int, ncols: int = 4, size: tuple[float, float] = (3.4, 3.0)) -> tuple[Figure, list]:
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    figure = Figure(figsize=(size[0] * ncols, size[1] * nrows), layout="constrained")
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return figure, axes[:n]


def draw_confusions(evaluations: Sequence[SystemEvaluation]) -> Figure:
    """One pooled confusion matrix per system, rows true, columns predicted, counts in the cells."""
    figure, axes = _grid(len(evaluations))
    for ax, ev in zip(axes, evaluations):
        matrix = np.asarray(ev.report["pooled"]["confusion_matrix"], np.float64)
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(j, i, f"{int(count)}", ha="center", va="center", color="white" if share[i, j] > 0.5 else "black", fontsize=8)
        ticks = range(len(ev.classes))
        ax.set_xticks(ticks, [c[:3] for c in ev.classes], fontsize=8)
        ax.set_yticks(ticks, [c[:3] for c in ev.classes], fontsize=8)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(f"{ev.system} (UAR {ev.metrics['uar']:.3f})", fontsize=9)
    return figure


def draw_recall(evaluations: Sequence[SystemEvaluation], classes: Sequence[str]) -> Figure:
    """Systems x classes heat map of pooled per-class recall."""
    recall = np.array([[ev.metrics["recall"].get(c, np.nan) for c in classes] for ev in evaluations], np.float64)
    figure = Figure(figsize=(1.2 * len(classes) + 2.5, 0.42 * len(evaluations) + 1.2), layout="constrained")
    ax = figure.subplots()
    image = ax.imshow(recall, cmap="viridis", vmin=0, vmax=1, aspect="auto")
    for (i, j), value in np.ndenumerate(recall):
        ax.text(j, i, "–" if np.isnan(value) else f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="black" if value > 0.6 else "white")  # fmt: skip
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(evaluations)), [ev.system for ev in evaluations], fontsize=8)
    ax.set_title("Per-class recall (pooled over folds)", fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def draw_learning_curves(evaluations: Sequence[SystemEvaluation], quantity: str) -> Figure:
    """Per system, one line per fold (and seed) of ``quantity`` per epoch: ``val_uar`` or ``loss``
    (training loss dashed, validation loss solid)."""
    figure, axes = _grid(len(evaluations))
    for ax, ev in zip(axes, evaluations):
        runs: dict[str, list[dict[str, Any]]] = {}
        for row in ev.learning_curve:
            runs.setdefault(f"{row['fold']} s{int(row['seed'])}", []).append(row)
        for index, (run, rows) in enumerate(runs.items()):
            colour = line_style(index)["color"]
            epochs = [r["epoch"] for r in rows]
            if quantity == "loss":
                ax.plot(epochs, [r["train_loss"] for r in rows], "--", color=colour, lw=1)
                ax.plot(epochs, [np.nan if r["val_loss"] is None else r["val_loss"] for r in rows], "-", color=colour, lw=1.2, label=run)
            else:
                ax.plot(epochs, [np.nan if r[quantity] is None else r[quantity] for r in rows], "-o", color=colour, ms=2.5, lw=1.2, label=run)
        ax.set_title(ev.system, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel("validation UAR" if quantity == "val_uar" else "loss (train --, validation —)", fontsize=8)
        if quantity == "val_uar":
            ax.set_ylim(-0.02, 1.02)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if 0 < len(runs) <= MAX_LEGEND_RUNS:
            ax.legend(fontsize=6)
    return figure


def draw_attention(example: AttentionExample) -> Figure:
    """deep-fusion Fig. 5: the spectrogram above, then each system's audio and video attention weights
    along the clip's time axis."""
    has_audio = any(c.audio_weights is not None for c in example.curves)
    has_video = any(c.video_weights is not None for c in example.curves)
    rows = 1 + has_audio + has_video
    figure = Figure(figsize=(10, 2.4 * rows), layout="constrained")
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False).ravel()
    image, start, hop = spectrogram_on_time_grid(example.spectrogram, example.frame_times)
    axes[0].imshow(image, origin="lower", aspect="auto", cmap="magma", extent=(start, start + hop * image.shape[1], 0, image.shape[0]))
    axes[0].set_ylabel("frequency bin", fontsize=8)
    axes[0].set_title(f"{example.clip_id} (true: {example.label}); blank = silence dropped by segmentation", fontsize=10)
    panels = []
    if has_audio:
        panels.append((axes[1], "audio", "audio attention (encoder steps)"))
    if has_video:
        panels.append((axes[rows - 1], "video", "video attention (face frames)"))
    for index, curve in enumerate(example.curves):
        for ax, stream, _ in panels:
            times, weights = getattr(curve, f"{stream}_times"), getattr(curve, f"{stream}_weights")
            if weights is not None:
                ax.plot(times, weights, marker="o", ms=2, lw=1.1, **line_style(index), label=f"{curve.system} → {curve.predicted}")
    for ax, _, ylabel in panels:
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    axes[-1].set_xlabel("time in the clip (s)", fontsize=8)
    return figure


def draw_audio_factor(means: Mapping[str, list[ClassMean]]) -> Figure:
    """am-fbp Fig. 7: mean audio factor mu per emotion, one bar per system, +- one standard deviation."""
    classes = [m.label for m in next(iter(means.values()))]
    width = 0.8 / len(means)
    figure = Figure(figsize=(1.3 * len(classes) + 2, 3.6), layout="constrained")
    ax = figure.subplots()
    for index, (system, rows) in enumerate(means.items()):
        x = np.arange(len(classes)) + (index - (len(means) - 1) / 2) * width
        ax.bar(x, [r.mean for r in rows], width, yerr=[r.std for r in rows], capsize=3, label=system, color=f"C{index}")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean audio factor μ (video η = 1 − μ)", fontsize=8)
    ax.set_title("Adaptive factor of the audio modality per emotion (test clips)", fontsize=10)
    ax.legend(fontsize=8)
    return figure


@dataclass(frozen=True)
class TsneMap:
    system: str
    fold: str
    coordinates: np.ndarray  # (n, 2)
    labels: tuple[str, ...]
    roles: tuple[str, ...]
    perplexity: float


def draw_tsne(maps: Sequence[TsneMap], classes: Sequence[str]) -> Figure:
    """am-fbp Fig. 9: one t-SNE map per system, colour = true emotion, filled = the fold's test speakers."""
    figure, axes = _grid(len(maps))
    colour = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    for ax, tsne_map in zip(axes, maps):
        labels, roles = np.asarray(tsne_map.labels, object), np.asarray(tsne_map.roles, object)
        for name in classes:
            for tested in (False, True):
                picked = (labels == name) & ((roles == "test") == tested)
                if picked.any():
                    ax.scatter(*tsne_map.coordinates[picked].T, s=22, edgecolors=colour[name], linewidths=1.2,
                               facecolors=colour[name] if tested else "none")  # fmt: skip
        ax.set_title(f"{tsne_map.system} (model of {tsne_map.fold})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        figure.axes[0].scatter([], [], s=22, color=colour[name], label=name) for name in classes
    ] + [figure.axes[0].scatter([], [], s=22, facecolors="none", edgecolors="grey", label="training speakers")]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    return figure


# --- HTML --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FigureImage:
    name: str  # file name stem: figures/NAME.png
    caption: str
    png: bytes


@dataclass(frozen=True)
class Note:
    text: str  # why something is not shown: systems a figure does not apply to


@dataclass
class Section:
    anchor: str
    title: str
    parts: list[str | FigureImage | Note] = field(default_factory=list)  # HTML fragments, figures, notes


def html_table(header: Sequence[str], rows: Iterable[Sequence[Any]], numeric_from: int = 1) -> str:
    """A plain table; cells are escaped, numbers printed with 3 decimals and right-aligned."""

    def cell(value: Any, tag: str, index: int) -> str:
        if isinstance(value, float):
            text = "–" if math.isnan(value) else f"{value:.3f}"
        else:
            text = html.escape(str(value))
        css = ' class="num"' if index >= numeric_from and tag == "td" else ""
        return f"<{tag}{css}>{text}</{tag}>"

    head = "".join(cell(h, "th", i) for i, h in enumerate(header))
    body = "\n".join("<tr>" + "".join(cell(v, "td", i) for i, v in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>\n{body}\n</tbody></table>"


CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { border-bottom: 1px solid #ccc; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .9em; }
th, td { border: 1px solid #ccc; padding: .25em .6em; } th { background: #f0f0f0; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tbody tr:nth-child(even) { background: #fafafa; }
figure { margin: 1.5em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: .9em; color: #555; margin-top: .3em; }
.note { background: #fff8e1; border-left: 4px solid #f0b400; padding: .4em .8em; margin: .6em 0; }
nav ul { columns: 2; } code { background: #f4f4f4; padding: 0 .2em; }
"""
# Everything the page shows is inline: the policy makes the browser refuse any other load.
CONTENT_SECURITY_POLICY = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def render_html(title: str, intro: str, sections: Sequence[Section]) -> str:
    toc = "".join(f'<li><a href="#{s.anchor}">{html.escape(s.title)}</a></li>' for s in sections)
    body = []
    for section in sections:
        body.append(f'<section id="{section.anchor}"><h2>{html.escape(section.title)}</h2>')
        for part in section.parts:
            if isinstance(part, FigureImage):
                data = base64.b64encode(part.png).decode("ascii")
                body.append(
                    f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(part.caption)}">'
                    f"<figcaption>{html.escape(part.caption)} <code>figures/{part.name}.png</code></figcaption></figure>"
                )
            elif isinstance(part, Note):
                body.append(f'<p class="note">{html.escape(part.text)}</p>')
            else:
                body.append(part)
        body.append("</section>")
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{CONTENT_SECURITY_POLICY}">'
        f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>"
        f"<h1>{html.escape(title)}</h1>{intro}<nav><ul>{toc}</ul></nav>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def write_report(out_dir: Path, title: str, intro: str, sections: Sequence[Section]) -> Path:
    """``out_dir/report.html`` and a PNG copy of each figure in ``out_dir/figures`` (older PNGs removed,
    so the folder holds exactly this report's figures)."""
    figures_dir = Path(out_dir) / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    for stale in figures_dir.glob("*.png"):
        stale.unlink()
    for section in sections:
        for part in section.parts:
            if isinstance(part, FigureImage):
                (figures_dir / f"{part.name}.png").write_bytes(part.png)
    path = Path(out_dir) / "report.html"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render_html(title, intro, sections), encoding="utf-8")
    tmp.replace(path)
    return path


def _figure(name: str, caption: str, figure: Figure) -> FigureImage:
    return FigureImage(name, caption, png_bytes(figure))


# --- the report ----------------------------------------------------------------------------------------


def _metrics_section(evaluations: Sequence[SystemEvaluation]) -> Section:
    section = Section("metrics", "Metrics per system and fold")
    section.parts.append(
        "<p>Pooled over every fold's test clips (each clip scored once, by the model that never saw its "
        "speaker); UAR = unweighted average recall, the papers' score.</p>"
    )
    section.parts.append(html_table(
        ["system", "task", "clips", "UAR", "accuracy", "macro-F1", "fold UAR mean", "fold UAR std"],
        [(ev.system, ev.metrics["task"], ev.metrics["clips"], ev.metrics["uar"], ev.metrics["accuracy"],
          ev.metrics["macro_f1"], ev.metrics["fold_uar_mean"], ev.metrics["fold_uar_std"]) for ev in evaluations],
        numeric_from=2,
    ))  # fmt: skip
    rows = [
        (ev.system, fold, r["n_clips"], r["uar"], r["accuracy"], r["macro_f1"])
        for ev in evaluations
        for fold, r in ev.report["folds"].items()
    ]
    section.parts.append("<h3>Per fold (test speakers of each fold)</h3>")
    section.parts.append(html_table(["system", "fold", "clips", "UAR", "accuracy", "macro-F1"], rows, numeric_from=2))
    return section


def _classes_section(evaluations: Sequence[SystemEvaluation], classes: list[str]) -> Section:
    section = Section("classes", "Confusion matrices and per-class recall")
    section.parts.append(_figure("confusion", "Pooled confusion matrices: rows true, columns predicted; colour = share of the row.", draw_confusions(evaluations)))
    support = evaluations[0].report["pooled"]["per_class"]
    section.parts.append(html_table(
        ["system", *classes],
        [(ev.system, *[float(ev.metrics["recall"].get(c, math.nan)) for c in classes]) for ev in evaluations]
        + [("clips (support)", *[support.get(c, {}).get("support", 0) for c in classes])],
    ))  # fmt: skip
    section.parts.append(_figure("recall", "Per-class recall, pooled over folds.", draw_recall(evaluations, classes)))
    return section


def _learning_section(evaluations: Sequence[SystemEvaluation]) -> Section:
    section = Section("learning", "Learning curves")
    section.parts.append(_figure("learning_curves_uar", "Validation UAR per epoch, one line per fold and seed.", draw_learning_curves(evaluations, "val_uar")))
    section.parts.append(_figure("learning_curves_loss", "Cross-entropy per epoch: training dashed, validation solid (am-fbp Fig. 8).", draw_learning_curves(evaluations, "loss")))
    return section


def _example_data(features_dir: Path, features: Features, clip_ids: Sequence[str]) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """clip -> (raw spectrogram (T, bins), its frame times, the face frames' times) for the examples."""
    wanted = set(clip_ids)
    clips = read_table(Path(features_dir) / "clips.parquet", schemas.clips_schema(0), columns=["clip_id", "linear_times"])
    times = {c: np.asarray(t, np.float64) for c, t in zip(clips["clip_id"].to_pylist(), clips["linear_times"].to_pylist()) if c in wanted}
    frames = read_table(Path(features_dir) / "frames.parquet", schemas.frames_schema(0, 0), columns=["clip_id", "frame_index", "t"])
    frames = frames.filter(pc.is_in(frames["clip_id"], value_set=pa.array(sorted(wanted), pa.string())))
    frames = frames.sort_by([("clip_id", "ascending"), ("frame_index", "ascending")])
    video_times: dict[str, list[float]] = {}
    for clip, t in zip(frames["clip_id"].to_pylist(), frames["t"].to_pylist()):
        video_times.setdefault(clip, []).append(t)
    return {c: (features.spectrograms[c], times[c], np.asarray(video_times.get(c, []), np.float64)) for c in clip_ids}


def _skipped_note(figure: str, skipped: Mapping[str, str]) -> list[Note]:
    """One note per reason, naming the systems ``figure`` leaves out for it."""
    by_reason: dict[str, list[str]] = {}
    for system, why in skipped.items():
        by_reason.setdefault(why, []).append(system)
    return [Note(f"Not in the {figure}: {', '.join(systems)}: {why}.") for why, systems in by_reason.items()]


def _no_attention_reason(system: str) -> str:
    if get_spec(system).input_kind == "segment":
        return "segment models classify 655 ms segments and have no attention over frames"
    return "the model's output carries no attention weights"


def _attention_section(
    analyses: Mapping[str, SystemAnalysis],
    evaluations: Mapping[str, SystemEvaluation],
    label_of: Mapping[str, str],
    classes: Sequence[str],
    examples: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> Section:
    section = Section("attention", "Attention over the frames of example clips")
    section.parts.append(
        "<p>deep-fusion-fbp-afew Fig. 5 / am-fbp Fig. 6: each system's attention weights (each curve sums to "
        "one over its frames) on a clip of a test speaker, computed by the model of the fold that tested "
        "it; the legend gives each system's decision. Audio steps are the AlexNet encoder's, about 320 ms "
        "of voiced speech each, placed at the centre of the frames they span.</p>"
    )
    attending = [s for s, a in analyses.items() if a.test.audio_weights is not None or a.test.video_weights is not None]
    section.parts += _skipped_note("attention figures", {s: _no_attention_reason(s) for s in analyses if s not in attending})
    if not examples:
        section.parts.append(Note("No example clip drawn (report.example_clips is 0 or no system has attention)."))
    for number, (clip, (spectrogram, frame_times, video_times)) in enumerate(examples.items(), start=1):
        curves = []
        for system in attending:
            test = analyses[system].test
            row = test.clip_ids.index(clip)
            audio_times = audio_weights = video_weights = None
            if test.audio_weights is not None:
                audio_weights = test.audio_weights[row]
                audio_times = audio_step_times(len(audio_weights), int(test.audio_frames[row]), frame_times)
            if test.video_weights is not None:
                video_weights = test.video_weights[row]
                if len(video_times) != len(video_weights):
                    raise ReportError(
                        f"{system} weighs {len(video_weights)} face frames of {clip} but frames.parquet has "
                        f"{len(video_times)}; the models were trained on other features: re-run avemo train"
                    )
            curves.append(AttentionCurve(system, evaluations[system].predicted.get(clip, "?"), audio_times, audio_weights,
                                         video_times if video_weights is not None else None, video_weights))  # fmt: skip
        example = AttentionExample(clip, label_of[clip], spectrogram, frame_times, curves)
        section.parts.append(_figure(f"attention_{number}", f"Example {number}: clip {clip}, true emotion {label_of[clip]}.", draw_attention(example)))
    return section


def _audio_factor_section(analyses: Mapping[str, SystemAnalysis], label_of: Mapping[str, str], classes: Sequence[str]) -> Section:
    section = Section("audio-factor", "Adaptive audio factor per emotion (AG-FBP)")
    section.parts.append(
        "<p>am-fbp Fig. 7: mu = |e<sub>a</sub>| / (|e<sub>a</sub>| + |e<sub>v</sub>|) (Eq. 15), the share of "
        "the audio modality in the fused vector, averaged over each emotion's test clips. Above 0.5 the "
        "clip leans on its voice, below on its face.</p>"
    )
    adaptive = {s: a for s, a in analyses.items() if a.test.mu is not None}
    section.parts += _skipped_note(
        "audio-factor figure", {s: "no adaptive factor (only AG-FBP and AM-FBP compute mu)" for s in analyses if s not in adaptive}
    )
    if not adaptive:
        section.parts.append(Note("None of the reported systems has an adaptive factor; add agfbp or amfbp to see this figure."))
        return section
    means = {s: mean_by_class(a.test.mu, [label_of[c] for c in a.test.clip_ids], classes) for s, a in adaptive.items()}
    section.parts.append(html_table(
        ["emotion", *[f"{s} mean μ" for s in means], *[f"{s} std" for s in means], "clips"],
        [(c, *[means[s][i].mean for s in means], *[means[s][i].std for s in means], next(iter(means.values()))[i].n)
         for i, c in enumerate(classes)],
    ))  # fmt: skip
    section.parts.append(_figure("audio_factor", "Mean audio factor μ per emotion, ± one standard deviation; dashed: equal weight.", draw_audio_factor(means)))
    return section


def _tsne_section(analyses: Mapping[str, SystemAnalysis], label_of: Mapping[str, str], classes: Sequence[str], settings: ReportSettings) -> Section:
    section = Section("tsne", "t-SNE of the clip embeddings")
    section.parts.append(
        "<p>am-fbp Fig. 9: the vector each system's classifier reads, mapped to two dimensions by t-SNE "
        "(scikit-learn, PCA start, fixed seed). One model per system, that of its first fold, embeds every "
        "clip: filled markers are that fold's test speakers, hollow ones the speakers it trained on "
        "(models of different folds live in different spaces and cannot share a map).</p>"
    )
    maps, skipped = [], {}
    for system, analysis in analyses.items():
        embedded = analysis.embedded
        if len(embedded.clip_ids) < MIN_TSNE_CLIPS:
            skipped[system] = f"fewer clips than the {MIN_TSNE_CLIPS} t-SNE needs"
            continue
        coordinates = tsne_coordinates(embedded.embeddings, settings.tsne_perplexity, settings.seed)
        maps.append(TsneMap(system, analysis.embedding_fold, coordinates, tuple(label_of[c] for c in embedded.clip_ids),
                            analysis.roles, fitted_perplexity(settings.tsne_perplexity, len(coordinates))))  # fmt: skip
    section.parts += _skipped_note("t-SNE figure", skipped)
    if maps:
        counts = sorted({len(m.labels) for m in maps})
        perplexities = sorted({round(m.perplexity, 2) for m in maps})
        section.parts.append(_figure(
            "tsne",
            f"t-SNE of {', '.join(map(str, counts))} clip embeddings per system, perplexity "
            f"{', '.join(map(str, perplexities))} (asked {settings.tsne_perplexity:g}; lowered to (clips − 1) / 3 for few clips).",
            draw_tsne(maps, classes),
        ))  # fmt: skip
    return section


@dataclass(frozen=True)
class ReportSummary:
    html: Path
    figures: tuple[Path, ...]
    notes: tuple[str, ...]  # systems left out of a figure, and why


def build_report(
    systems: Sequence[str],
    *,
    eval_dir: Path,
    models_dir: Path,
    features_dir: Path,
    out_dir: Path,
    settings: ReportSettings = ReportSettings(),
) -> ReportSummary:
    """The report of ``systems`` from ``eval_dir/SYSTEM`` and ``models_dir/SYSTEM``, into ``out_dir``."""
    if not systems:
        raise ReportError("no system to report on; name some with --systems or in params train.systems")
    for system in systems:
        get_spec(system)  # an unknown name fails here, before any work
    evaluations = {s: load_evaluation(Path(eval_dir) / s, s) for s in systems}
    first = evaluations[systems[0]]
    classes = first.classes
    for ev in evaluations.values():
        if ev.classes != classes or ev.metrics["task"] != first.metrics["task"]:
            raise ReportError(
                f"{ev.system} was evaluated on classes {ev.classes} ({ev.metrics['task']}) but {first.system} on "
                f"{classes} ({first.metrics['task']}); report systems of one corpus and task together"
            )

    loaded: dict[tuple[str, frozenset[str]], tuple[Features, TaskLabels]] = {}
    analyses: dict[str, SystemAnalysis] = {}
    label_of: dict[str, str] = {}
    for system in systems:
        spec = get_spec(system)
        key = (spec.input_kind, spec.needs)
        if key not in loaded:
            features = load_features(features_dir, spec.needs, spec.input_kind)
            loaded[key] = (features, task_labels(features, first.metrics["task"]))
        features, labels = loaded[key]
        if list(labels.classes) != classes:
            raise ReportError(f"{features_dir} gives classes {list(labels.classes)} but {system} was evaluated on {classes}")
        label_of.update({clip: classes[index] for clip, index in labels.index.items()})
        log.info("report: analysing %s", system)
        analyses[system] = analyse_system(system, Path(models_dir) / system, features, labels, settings)

    attending = [a for a in analyses.values() if a.test.audio_weights is not None or a.test.video_weights is not None]
    examples = {}
    if attending and settings.example_clips:
        candidates = set.intersection(*(set(a.test.clip_ids) for a in attending))
        picked = pick_examples(sorted(candidates), label_of, classes, settings.example_clips, settings.seed)
        audio = next((f for f, _ in loaded.values() if f.spectrograms is not None), None)
        if audio is None:  # only video systems: load the spectrograms for the picture alone
            audio = load_features(features_dir, {"audio"}, "clip")
        examples = _example_data(features_dir, audio, picked)

    ordered = list(evaluations.values())
    sections = [
        _metrics_section(ordered),
        _classes_section(ordered, classes),
        _learning_section(ordered),
        _attention_section(analyses, evaluations, label_of, classes, examples),
        _audio_factor_section(analyses, label_of, classes),
        _tsne_section(analyses, label_of, classes, settings),
    ]
    commit = git_commit()
    intro = (
        f"<p>{len(systems)} systems ({html.escape(', '.join(systems))}), task <b>{html.escape(first.metrics['task'])}</b>, "
        f"classes {html.escape(', '.join(classes))}. Evaluations from <code>{html.escape(str(eval_dir))}</code>, "
        f"models from <code>{html.escape(str(models_dir))}</code>, features from <code>{html.escape(str(features_dir))}</code>. "
        f"Written {now_iso()} by avemo {avemo.__version__} at commit <code>{html.escape(str(commit['commit']))}</code>"
        f"{' (with uncommitted changes)' if commit['dirty'] else ''}. Analysis figures use the first checkpoint of "
        "each fold (one seed of an ensemble).</p>"
    )
    html_path = write_report(out_dir, "avemo evaluation report", intro, sections)
    figures = tuple(Path(out_dir) / "figures" / f"{p.name}.png" for s in sections for p in s.parts if isinstance(p, FigureImage))
    notes = tuple(p.text for s in sections for p in s.parts if isinstance(p, Note))
    return ReportSummary(html_path, figures, notes)
