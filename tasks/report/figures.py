"""The evaluation report's figures, drawn from the numbers ``analysis`` computes.

Each ``draw_*`` function returns one figure: the pooled confusion matrices, per-class recall, learning
curves, and the papers' analysis figures (attention over an example clip's frames with its spectrogram,
AG-FBP's audio factor per emotion, t-SNE maps of the clip embeddings). Figures are drawn on matplotlib
``Figure`` objects (Agg, no pyplot state); ``png_bytes`` gives the PNG the report embeds and copies.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from tasks.report.analysis import AttentionExample, ClassMean, SystemEvaluation, TsneMap, spectrogram_on_time_grid

PLOT_DPI = 100
MAX_LEGEND_RUNS = 10  # beyond this many folds x seeds a legend hides the curves


def png_bytes(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=PLOT_DPI, bbox_inches="tight")
    return buffer.getvalue()


def line_style(index: int) -> dict[str, str]:
    """Colour and dash of the index-th line: ten colours, then the same with dashes, so up to 30 lines
    on one axis stay apart."""
    return {"color": f"C{index % 10}", "linestyle": ("-", "--", ":")[index // 10 % 3]}


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
    for ax, ev in zip(axes, evaluations, strict=False):  # the grid may hold more axes than systems
        matrix = np.asarray(ev.report["pooled"]["confusion_matrix"], np.float64)
        share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(matrix):
            ax.text(
                j,
                i,
                f"{int(count)}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.5 else "black",
                fontsize=8,
            )
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
        ax.text(
            j,
            i,
            "–" if np.isnan(value) else f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=8,
            color="black" if value > 0.6 else "white",
        )
    ax.set_xticks(range(len(classes)), classes, fontsize=8)
    ax.set_yticks(range(len(evaluations)), [ev.system for ev in evaluations], fontsize=8)
    ax.set_title("Per-class recall (pooled over folds)", fontsize=10)
    figure.colorbar(image, ax=ax, shrink=0.8)
    return figure


def draw_learning_curves(evaluations: Sequence[SystemEvaluation], quantity: str) -> Figure:
    """Per system, one line per fold (and seed) of ``quantity`` per epoch: ``val_uar`` or ``loss``
    (training loss dashed, validation loss solid)."""
    figure, axes = _grid(len(evaluations))
    for ax, ev in zip(axes, evaluations, strict=False):  # the grid may hold more axes than systems
        runs: dict[str, list[dict[str, Any]]] = {}
        for row in ev.learning_curve:
            runs.setdefault(f"{row['fold']} s{int(row['seed'])}", []).append(row)
        for index, (run, rows) in enumerate(runs.items()):
            colour = line_style(index)["color"]
            epochs = [r["epoch"] for r in rows]
            if quantity == "loss":
                ax.plot(epochs, [r["train_loss"] for r in rows], "--", color=colour, lw=1)
                ax.plot(
                    epochs,
                    [np.nan if r["val_loss"] is None else r["val_loss"] for r in rows],
                    "-",
                    color=colour,
                    lw=1.2,
                    label=run,
                )
            else:
                ax.plot(
                    epochs,
                    [np.nan if r[quantity] is None else r[quantity] for r in rows],
                    "-o",
                    color=colour,
                    ms=2.5,
                    lw=1.2,
                    label=run,
                )
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
    axes[0].imshow(
        image,
        origin="lower",
        aspect="auto",
        cmap="magma",
        extent=(start, start + hop * image.shape[1], 0, image.shape[0]),
    )
    axes[0].set_ylabel("frequency bin", fontsize=8)
    axes[0].set_title(
        f"{example.clip_id} (true: {example.label}); blank = silence dropped by segmentation", fontsize=10
    )
    panels = []
    if has_audio:
        panels.append((axes[1], "audio", "audio attention (encoder steps)"))
    if has_video:
        panels.append((axes[rows - 1], "video", "video attention (face frames)"))
    for index, curve in enumerate(example.curves):
        for ax, stream, _ in panels:
            times, weights = getattr(curve, f"{stream}_times"), getattr(curve, f"{stream}_weights")
            if weights is not None:
                ax.plot(
                    times,
                    weights,
                    marker="o",
                    ms=2,
                    lw=1.1,
                    **line_style(index),
                    label=f"{curve.system} → {curve.predicted}",
                )
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


def draw_tsne(maps: Sequence[TsneMap], classes: Sequence[str]) -> Figure:
    """am-fbp Fig. 9: one t-SNE map per system, colour = true emotion, filled = the fold's test speakers."""
    figure, axes = _grid(len(maps))
    colour = {c: f"C{i % 10}" for i, c in enumerate(classes)}
    for ax, tsne_map in zip(axes, maps, strict=False):  # the grid may hold more axes than maps
        labels, roles = np.asarray(tsne_map.labels, object), np.asarray(tsne_map.roles, object)
        for name in classes:
            for tested in (False, True):
                picked = (labels == name) & ((roles == "test") == tested)
                if picked.any():
                    ax.scatter(
                        *tsne_map.coordinates[picked].T,
                        s=22,
                        edgecolors=colour[name],
                        linewidths=1.2,
                        facecolors=colour[name] if tested else "none",
                    )
        ax.set_title(f"{tsne_map.system} (model of {tsne_map.fold})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [figure.axes[0].scatter([], [], s=22, color=colour[name], label=name) for name in classes] + [
        figure.axes[0].scatter([], [], s=22, facecolors="none", edgecolors="grey", label="training speakers")
    ]
    figure.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 6), fontsize=8)
    return figure
