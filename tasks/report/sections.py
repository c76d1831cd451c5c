"""The sections of the evaluation report, in the order the page shows them, and its introduction.

Each section puts ``analysis``'s numbers into tables and ``figures``' drawings into captioned images:
metrics per system and fold, confusion matrices and per-class recall, learning curves, attention over
example clips, AG-FBP's audio factor per emotion, t-SNE of the clip embeddings. A figure that does not
apply to a system (no attention in ``avef``, mu only in ``agfbp``/``amfbp``) leaves the system out with
a note in the report.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

import avemo
from avemo.config import ReportParams
from avemo.provenance import git_commit, now_iso
from models.registry import get_spec
from tasks.report.analysis import (
    MIN_TSNE_CLIPS,
    AttentionCurve,
    AttentionExample,
    ClipAnalysis,
    ExampleData,
    ReportError,
    SystemAnalysis,
    SystemEvaluation,
    TsneMap,
    audio_step_times,
    fitted_perplexity,
    mean_by_class,
    tsne_coordinates,
)
from tasks.report.figures import (
    draw_attention,
    draw_audio_factor,
    draw_confusions,
    draw_learning_curves,
    draw_recall,
    draw_tsne,
    png_bytes,
)
from tasks.report.html import FigureImage, Note, Section, html_table


def _figure(name: str, caption: str, figure: Figure) -> FigureImage:
    return FigureImage(name, caption, png_bytes(figure))


def _metrics_section(evaluations: Sequence[SystemEvaluation]) -> Section:
    section = Section("metrics", "Metrics per system and fold")
    section.parts.append(
        "<p>Pooled over every fold's test clips (each clip scored once, by the model that never saw its "
        "speaker); UAR = unweighted average recall, the papers' score.</p>"
    )
    section.parts.append(
        html_table(
            ["system", "task", "clips", "UAR", "accuracy", "macro-F1", "fold UAR mean", "fold UAR std"],
            [
                (
                    ev.system,
                    ev.metrics["task"],
                    ev.metrics["clips"],
                    ev.metrics["uar"],
                    ev.metrics["accuracy"],
                    ev.metrics["macro_f1"],
                    ev.metrics["fold_uar_mean"],
                    ev.metrics["fold_uar_std"],
                )
                for ev in evaluations
            ],
            numeric_from=2,
        )
    )
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
    section.parts.append(
        _figure(
            "confusion",
            "Pooled confusion matrices: rows true, columns predicted; colour = share of the row.",
            draw_confusions(evaluations),
        )
    )
    support = evaluations[0].report["pooled"]["per_class"]
    section.parts.append(
        html_table(
            ["system", *classes],
            [(ev.system, *[float(ev.metrics["recall"].get(c, math.nan)) for c in classes]) for ev in evaluations]
            + [("clips (support)", *[support.get(c, {}).get("support", 0) for c in classes])],
        )
    )
    section.parts.append(_figure("recall", "Per-class recall, pooled over folds.", draw_recall(evaluations, classes)))
    return section


def _learning_section(evaluations: Sequence[SystemEvaluation]) -> Section:
    section = Section("learning", "Learning curves")
    section.parts.append(
        _figure(
            "learning_curves_uar",
            "Validation UAR per epoch, one line per fold and seed.",
            draw_learning_curves(evaluations, "val_uar"),
        )
    )
    section.parts.append(
        _figure(
            "learning_curves_loss",
            "Cross-entropy per epoch: training dashed, validation solid (am-fbp Fig. 8).",
            draw_learning_curves(evaluations, "loss"),
        )
    )
    return section


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


def _attention_curve(
    system: str, test: ClipAnalysis, predicted: str, clip: str, frame_times: np.ndarray, video_times: np.ndarray
) -> AttentionCurve:
    """``system``'s attention weights over ``clip`` (a row of ``test``), on the clip's time axis."""
    row = test.clip_ids.index(clip)
    audio_times = audio_weights = None
    if test.audio_weights is not None:
        audio_weights = test.audio_weights[row]
        assert test.audio_frames is not None  # recorded with the audio weights
        audio_times = audio_step_times(len(audio_weights), int(test.audio_frames[row]), frame_times)
    if test.video_weights is None:
        return AttentionCurve(system, predicted, audio_times, audio_weights, None, None)
    video_weights = test.video_weights[row]
    if len(video_times) != len(video_weights):
        raise ReportError(
            f"{system} weighs {len(video_weights)} face frames of {clip} but frames.parquet has "
            f"{len(video_times)}; the models were trained on other features: re-run avemo train"
        )
    return AttentionCurve(system, predicted, audio_times, audio_weights, video_times, video_weights)


def _attention_section(
    analyses: Mapping[str, SystemAnalysis],
    evaluations: Mapping[str, SystemEvaluation],
    label_of: Mapping[str, str],
    examples: Mapping[str, ExampleData],
) -> Section:
    section = Section("attention", "Attention over the frames of example clips")
    section.parts.append(
        "<p>deep-fusion-fbp-afew Fig. 5 / am-fbp Fig. 6: each system's attention weights (each curve sums to "
        "one over its frames) on a clip of a test speaker, computed by the model of the fold that tested "
        "it; the legend gives each system's decision. Audio steps are the AlexNet encoder's, about 320 ms "
        "of voiced speech each, placed at the centre of the frames they span.</p>"
    )
    attending = [s for s, a in analyses.items() if a.test.has_attention]
    section.parts += _skipped_note(
        "attention figures", {s: _no_attention_reason(s) for s in analyses if s not in attending}
    )
    if not examples:
        section.parts.append(Note("No example clip drawn (report.example_clips is 0 or no system has attention)."))
    for number, (clip, (spectrogram, frame_times, video_times)) in enumerate(examples.items(), start=1):
        curves = [
            _attention_curve(
                system,
                analyses[system].test,
                evaluations[system].predicted.get(clip, "?"),
                clip,
                frame_times,
                video_times,
            )
            for system in attending
        ]
        example = AttentionExample(clip, label_of[clip], spectrogram, frame_times, curves)
        section.parts.append(
            _figure(
                f"attention_{number}",
                f"Example {number}: clip {clip}, true emotion {label_of[clip]}.",
                draw_attention(example),
            )
        )
    return section


def _audio_factor_section(
    analyses: Mapping[str, SystemAnalysis], label_of: Mapping[str, str], classes: Sequence[str]
) -> Section:
    section = Section("audio-factor", "Adaptive audio factor per emotion (AG-FBP)")
    section.parts.append(
        "<p>am-fbp Fig. 7: mu = |e<sub>a</sub>| / (|e<sub>a</sub>| + |e<sub>v</sub>|) (Eq. 15), the share of "
        "the audio modality in the fused vector, averaged over each emotion's test clips. Above 0.5 the "
        "clip leans on its voice, below on its face.</p>"
    )
    mu_of = {s: a.test.mu for s, a in analyses.items() if a.test.mu is not None}
    section.parts += _skipped_note(
        "audio-factor figure",
        {s: "no adaptive factor (only AG-FBP and AM-FBP compute mu)" for s in analyses if s not in mu_of},
    )
    if not mu_of:
        section.parts.append(
            Note("None of the reported systems has an adaptive factor; add agfbp or amfbp to see this figure.")
        )
        return section
    means = {s: mean_by_class(mu, [label_of[c] for c in analyses[s].test.clip_ids], classes) for s, mu in mu_of.items()}
    section.parts.append(
        html_table(
            ["emotion", *[f"{s} mean μ" for s in means], *[f"{s} std" for s in means], "clips"],
            [
                (
                    c,
                    *[means[s][i].mean for s in means],
                    *[means[s][i].std for s in means],
                    next(iter(means.values()))[i].n,
                )
                for i, c in enumerate(classes)
            ],
        )
    )
    section.parts.append(
        _figure(
            "audio_factor",
            "Mean audio factor μ per emotion, ± one standard deviation; dashed: equal weight.",
            draw_audio_factor(means),
        )
    )
    return section


def _tsne_section(
    analyses: Mapping[str, SystemAnalysis],
    label_of: Mapping[str, str],
    classes: Sequence[str],
    settings: ReportParams,
) -> Section:
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
        maps.append(
            TsneMap(
                system,
                analysis.embedding_fold,
                coordinates,
                tuple(label_of[c] for c in embedded.clip_ids),
                analysis.roles,
                fitted_perplexity(settings.tsne_perplexity, len(coordinates)),
            )
        )
    section.parts += _skipped_note("t-SNE figure", skipped)
    if maps:
        counts = sorted({len(m.labels) for m in maps})
        perplexities = sorted({round(m.perplexity, 2) for m in maps})
        section.parts.append(
            _figure(
                "tsne",
                f"t-SNE of {', '.join(map(str, counts))} clip embeddings per system, perplexity "
                f"{', '.join(map(str, perplexities))} (asked {settings.tsne_perplexity:g}; "
                "lowered to (clips − 1) / 3 for few clips).",
                draw_tsne(maps, classes),
            )
        )
    return section


def report_sections(
    evaluations: Mapping[str, SystemEvaluation],
    analyses: Mapping[str, SystemAnalysis],
    label_of: Mapping[str, str],
    classes: list[str],
    examples: Mapping[str, ExampleData],
    settings: ReportParams,
) -> list[Section]:
    """Every section of the report, in page order; ``label_of`` gives each clip's true emotion."""
    ordered = list(evaluations.values())
    return [
        _metrics_section(ordered),
        _classes_section(ordered, classes),
        _learning_section(ordered),
        _attention_section(analyses, evaluations, label_of, examples),
        _audio_factor_section(analyses, label_of, classes),
        _tsne_section(analyses, label_of, classes, settings),
    ]


def report_intro(
    systems: Sequence[str], task: str, classes: Sequence[str], eval_dir: Path, models_dir: Path, features_dir: Path
) -> str:
    """The paragraph above the contents: what is reported, from where, and by which code."""
    commit = git_commit()
    return (
        f"<p>{len(systems)} systems ({html.escape(', '.join(systems))}), task <b>{html.escape(task)}</b>, "
        f"classes {html.escape(', '.join(classes))}. Evaluations from <code>{html.escape(str(eval_dir))}</code>, "
        f"models from <code>{html.escape(str(models_dir))}</code>, "
        f"features from <code>{html.escape(str(features_dir))}</code>. "
        f"Written {now_iso()} by avemo {avemo.__version__} at commit <code>{html.escape(str(commit['commit']))}</code>"
        f"{' (with uncommitted changes)' if commit['dirty'] else ''}. Analysis figures use the first checkpoint of "
        "each fold (one seed of an ensemble).</p>"
    )
