"""The report flow: what ``avemo evaluate`` wrote and the trained models, into one HTML report.

It loads each system's evaluation, re-runs its models for the analysis figures, picks the example clips
whose attention is drawn, and writes ``report.html`` with a PNG copy of each figure (``tasks.report``).
A plain function, not a Prefect flow: the report runs in one process, and importing Prefect would slow
the command's start.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from avemo.config import ReportParams
from models.registry import get_spec
from tasks.learning.features import Features, Task, TaskLabels, load_features, task_labels
from tasks.report.analysis import (
    ExampleData,
    ReportError,
    SystemAnalysis,
    SystemEvaluation,
    analyse_system,
    load_evaluation,
    load_example_data,
    pick_examples,
)
from tasks.report.html import FigureImage, Note, write_report
from tasks.report.sections import report_intro, report_sections

log = logging.getLogger("avemo.report")


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
    settings: ReportParams | None = None,
) -> ReportSummary:
    """The report of ``systems`` from ``eval_dir/SYSTEM`` and ``models_dir/SYSTEM``, into ``out_dir``;
    ``settings``: the report section (default: params.yaml's)."""
    settings = settings or ReportParams.model_validate({})
    evaluations = _load_evaluations(systems, eval_dir)
    first = evaluations[systems[0]]
    task, classes = first.metrics["task"], first.classes
    analyses, label_of, loaded = _analyse_systems(systems, task, classes, features_dir, models_dir, settings)
    examples = _examples(analyses, label_of, classes, loaded, features_dir, settings)
    sections = report_sections(evaluations, analyses, label_of, classes, examples, settings)
    intro = report_intro(systems, task, classes, eval_dir, models_dir, features_dir)
    html_path = write_report(out_dir, "avemo evaluation report", intro, sections)
    parts = [part for section in sections for part in section.parts]
    figures = tuple(Path(out_dir) / "figures" / f"{p.name}.png" for p in parts if isinstance(p, FigureImage))
    notes = tuple(p.text for p in parts if isinstance(p, Note))
    return ReportSummary(html_path, figures, notes)


def _load_evaluations(systems: Sequence[str], eval_dir: Path) -> dict[str, SystemEvaluation]:
    """Each system's evaluation from ``eval_dir/SYSTEM``, all of one task and the same classes."""
    if not systems:
        raise ReportError("no system to report on; name some with --systems or in params train.systems")
    for system in systems:
        get_spec(system)  # an unknown name fails here, before any work
    evaluations = {s: load_evaluation(Path(eval_dir) / s, s) for s in systems}
    first = evaluations[systems[0]]
    for ev in evaluations.values():
        if ev.classes != first.classes or ev.metrics["task"] != first.metrics["task"]:
            raise ReportError(
                f"{ev.system} was evaluated on classes {ev.classes} ({ev.metrics['task']}) but {first.system} on "
                f"{first.classes} ({first.metrics['task']}); report systems of one corpus and task together"
            )
    return evaluations


def _analyse_systems(
    systems: Sequence[str],
    task: Task,
    classes: list[str],
    features_dir: Path,
    models_dir: Path,
    settings: ReportParams,
) -> tuple[dict[str, SystemAnalysis], dict[str, str], list[Features]]:
    """Each system's analysis, the true emotion of every clip, and the features loaded for them (once
    per kind of input: systems that read the same features share them)."""
    loaded: dict[tuple[str, frozenset[str], str | None], tuple[Features, TaskLabels]] = {}
    analyses: dict[str, SystemAnalysis] = {}
    label_of: dict[str, str] = {}
    for system in systems:
        spec = get_spec(system)
        train_json = Path(models_dir) / system / "train.json"
        frontend = json.loads(train_json.read_text()).get("frontend") if train_json.exists() else None
        key = (spec.input_kind, spec.needs, frontend)
        if key not in loaded:
            features = load_features(features_dir, spec.needs, spec.input_kind, frontend)
            loaded[key] = (features, task_labels(features, task))
        features, labels = loaded[key]
        if list(labels.classes) != classes:
            raise ReportError(
                f"{features_dir} gives classes {list(labels.classes)} but {system} was evaluated on {classes}"
            )
        label_of.update({clip: classes[index] for clip, index in labels.index.items()})
        log.info("report: analysing %s", system)
        analyses[system] = analyse_system(system, Path(models_dir) / system, features, labels, settings)
    return analyses, label_of, [features for features, _ in loaded.values()]


def _examples(
    analyses: Mapping[str, SystemAnalysis],
    label_of: Mapping[str, str],
    classes: list[str],
    loaded: Sequence[Features],
    features_dir: Path,
    settings: ReportParams,
) -> dict[str, ExampleData]:
    """The example clips whose attention is drawn, among those every system with attention tested."""
    attending = [a for a in analyses.values() if a.test.has_attention]
    if not (attending and settings.example_clips):
        return {}
    candidates = set.intersection(*(set(a.test.clip_ids) for a in attending))
    picked = pick_examples(sorted(candidates), label_of, classes, settings.example_clips, settings.seed)
    audio = next((f for f in loaded if f.audio is not None), None)
    if audio is None:  # only video systems: load the spectrograms for the picture alone
        audio = load_features(features_dir, {"audio"}, "clip")
    return load_example_data(features_dir, audio, picked)
