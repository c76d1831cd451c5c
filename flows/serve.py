"""Scheduled re-training: a Prefect deployment runs ``retrain_cycle`` on a cron schedule.

One cycle hashes every clip of ``serve.corpora`` and compares the hashes with the last cycle's
manifest. Nothing new or changed: the cycle records "no change" and stops. Otherwise it preprocesses
(the per-clip cache computes only new or changed clips), trains a candidate, evaluates it, and scores
candidate and current model on the same held-out clips. The candidate replaces the current model
unless it scores worse; the decision, both scores and the corpus hashes go to ``decisions.jsonl``.

Why a fixed held-out speaker set: the comparison is fair only on clips neither model has trained on.
The held-out speakers are chosen once (``heldout.json``) and never trained on by any cycle, so every
current model is leak-free on them, and new clips of those speakers join the test set of both models.

Layout of ``serve.work_dir``::

    manifest.parquet     the corpora as of the last cycle that trained (clip ids and sha256)
    heldout.json         the held-out test speakers
    decisions.jsonl      one JSON document per cycle, with provenance
    current.json         which candidate is the current model, and its score when promoted
    manifests/           this cycle's development and held-out manifests
    features/            their features (development/, heldout/)
    candidates/CYCLE/    models/ (checkpoints), eval/ (cross-validation over development speakers),
                         heldout_predictions.json, decision.json
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
from prefect import flow, get_run_logger, serve, task
from prefect.cache_policies import NO_CACHE
from prefect.deployments.runner import EntrypointType, RunnerDeployment
from prefect.schedules import Cron
from prefect.settings import PREFECT_API_URL

from avemo import schemas
from avemo.config import Params, load_params
from avemo.parquet_io import read_table, write_table
from avemo.provenance import provenance
from flows.evaluate import evaluate_flow
from flows.ingest import scan_corpora
from flows.preprocess import run_preprocess
from flows.train import run_train
from models.registry import get_spec
from tasks.corpora.manifest import ManifestRow, manifest_table
from tasks.learning.checkpoints import load_trained
from tasks.learning.evaluation import compare_systems, ensemble
from tasks.learning.features import TaskLabels, load_features, task_labels
from tasks.learning.inference import trained_posteriors
from tasks.serve import (
    CorpusChanges,
    ServeError,
    choose_heldout_speakers,
    diff_manifests,
    heldout_scores,
    promotion_decision,
)

PARTS = ("development", "heldout")


@dataclass(frozen=True)
class ServeLayout:
    """Where a work dir keeps each thing (see the module docstring)."""

    root: Path

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.parquet"

    @property
    def heldout(self) -> Path:
        return self.root / "heldout.json"

    @property
    def decisions(self) -> Path:
        return self.root / "decisions.jsonl"

    @property
    def current(self) -> Path:
        return self.root / "current.json"

    def part_manifest(self, part: str) -> Path:
        return self.root / "manifests" / f"{part}.parquet"

    def features(self, part: str) -> Path:
        return self.root / "features" / part

    def new_candidate(self) -> tuple[str, Path]:
        """A cycle id from the UTC time (suffixed when two cycles start in the same second) and its folder."""
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        cycle, n = stamp, 1
        while (self.root / "candidates" / cycle).exists():
            n += 1
            cycle = f"{stamp}-{n}"
        folder = self.root / "candidates" / cycle
        folder.mkdir(parents=True)
        return cycle, folder


@dataclass(frozen=True)
class CycleReport:
    cycle: str
    changes: dict[str, int]
    computed_clips: tuple[str, ...]  # clips preprocessed (not read from the cache) this cycle
    candidate_uar: float | None  # held-out UAR; None when nothing changed
    current_uar: float | None  # the current model's held-out UAR on the same clips; None when there is none
    promoted: bool
    reason: str

    def __str__(self) -> str:
        scores = (
            ""
            if self.candidate_uar is None
            else (
                f"; held-out UAR candidate {self.candidate_uar:.3f}, current "
                + ("none" if self.current_uar is None else f"{self.current_uar:.3f}")
            )
        )
        return (
            f"cycle {self.cycle}: {self.changes['added']} added, {self.changes['changed']} changed, "
            f"{self.changes['removed']} removed clips; {len(self.computed_clips)} preprocessed{scores}; "
            f"{'promoted' if self.promoted else 'not promoted'} ({self.reason})"
        )


def _write_json(path: Path, document: Any) -> None:
    """Write to a temporary name and rename, so a reader never sees half a document."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    os.replace(tmp, path)


def _append_decision(layout: ServeLayout, params: Params, **record: Any) -> dict[str, Any]:
    document = provenance("serve", params.serve.model_dump(mode="json"), **record)
    layout.root.mkdir(parents=True, exist_ok=True)
    with layout.decisions.open("a") as handle:
        handle.write(json.dumps(document, sort_keys=True, default=str) + "\n")
    return document


def _heldout_speakers(layout: ServeLayout, params: Params, speakers: set[str]) -> tuple[str, ...]:
    """The persisted held-out speakers, or the first cycle's choice (then persisted)."""
    wanted = tuple(sorted(params.serve.heldout_speakers))
    if layout.heldout.exists():
        kept = tuple(json.loads(layout.heldout.read_text())["speakers"])
        if wanted and wanted != kept:
            raise ServeError(
                f"serve.heldout_speakers {list(wanted)} differ from {list(kept)} in {layout.heldout}: models in "
                f"{layout.root} may have trained on the new ones; restore the list or use a new serve.work_dir"
            )
        return kept
    chosen = wanted or choose_heldout_speakers(sorted(speakers), params.serve.heldout_share, params.train.split.seed)
    layout.root.mkdir(parents=True, exist_ok=True)
    _write_json(layout.heldout, {"speakers": list(chosen), "chosen": "serve.heldout_speakers" if wanted else "drawn"})
    return chosen


@task(name="predict-heldout", cache_policy=NO_CACHE)
def predict_heldout(model_dir: Path, features_dir: Path) -> dict[str, tuple[str, str | None]]:
    """``clip_id -> (true, predicted)`` of the ensemble of a model folder's checkpoints.

    A clip whose class the model was not trained on is predicted None (a miss): a candidate that
    learned a new emotion is not scored on fewer clips than the model it is compared with.
    """
    checkpoints = sorted(model_dir.glob("fold-*-seed*.pt"))
    if not checkpoints:
        raise ServeError(f"no checkpoints in {model_dir}; the model folder is incomplete")
    models = [load_trained(path) for path in checkpoints]
    first = models[0]
    spec = get_spec(first.model_name)
    features = load_features(features_dir, spec.needs, spec.input_kind, first.shapes.audio_frontend)
    truth = task_labels(features, first.task)
    true_of = {clip: truth.classes[i] for clip, i in truth.index.items()}
    clips = truth.labelled(features.clip_ids)
    known = [clip for clip in clips if true_of[clip] in first.classes]
    predicted: dict[str, str] = {}
    if known:
        labels = TaskLabels(first.task, first.classes, {c: first.classes.index(true_of[c]) for c in known}, {})
        pooled = ensemble([trained_posteriors(model, features, labels, known).clips for model in models])
        predicted = {clip: first.classes[i] for clip, i in zip(pooled.clip_ids, pooled.predicted, strict=True)}
    return {clip: (true_of[clip], predicted.get(clip)) for clip in clips}


def _matched_pairs(current: dict, candidate: dict, clips: list[str]) -> dict[str, Any] | None:
    """The matched-pairs test of candidate against current on the compared clips (needs 2 or more)."""
    if len(clips) < 2:
        return None

    def table(predictions: dict) -> pa.Table:
        return pa.table(
            {
                "clip_id": clips,
                "true": [predictions[c][0] for c in clips],
                "predicted": [predictions[c][1] or "" for c in clips],
            }
        )

    return asdict(compare_systems(table(current), table(candidate)))


scan_corpora_task = task(name="scan-corpora", cache_policy=NO_CACHE)(scan_corpora)


def _changes(layout: ServeLayout, rows: list[ManifestRow]) -> CorpusChanges:
    """Clips added, changed and removed since the last cycle that trained."""
    previous = None
    if layout.manifest.exists():
        last = read_table(layout.manifest, schemas.MANIFEST, ["clip_id", "sha256"]).to_pydict()
        previous = dict(zip(last["clip_id"], last["sha256"], strict=True))
    return diff_manifests(previous, {r.clip_id: r.sha256 for r in rows})


def _preprocess_parts(
    layout: ServeLayout,
    params: Params,
    scan: tuple[Path, list[ManifestRow], list[dict[str, Any]]],
    heldout: tuple[str, ...],
) -> list[str]:
    """Features of the development and held-out speakers' clips; the clips actually computed."""
    root, rows, corpora = scan
    computed: list[str] = []
    for part in PARTS:
        part_rows = [r for r in rows if (r.speaker in heldout) == (part == "heldout")]
        if not part_rows:
            raise ServeError(
                f"no {part} clips: held-out speakers {list(heldout)} against {len(rows)} clips of "
                f"speakers {sorted({r.speaker for r in rows})}; check serve.heldout_speakers"
            )
        manifest = layout.part_manifest(part)
        write_table(
            manifest_table(part_rows),
            manifest,
            schemas.MANIFEST,
            provenance("ingest", {"serve": part}, corpus_dir=str(root), corpora=corpora),
        )
        computed.extend(run_preprocess(manifest, layout.features(part), params.preprocess).computed_clips)
    return computed


def _train_candidate(system: str, params: Params, layout: ServeLayout, candidate_dir: Path) -> dict[str, Any]:
    """The candidate trained on the development speakers; its cross-validation metrics."""
    serve, choice = params.serve, params.system(system)
    train_params = choice.train.model_copy(
        update={"features_dir": layout.features("development"), "split": serve.split or choice.train.split}
    )
    run_train(system, train_params, choice.hyperparameters, candidate_dir / "models", choice.frontend)
    return evaluate_flow(
        system=system,
        model_dir=candidate_dir / "models",
        features_dir=layout.features("development"),
        out_dir=candidate_dir / "eval",
    )


@dataclass(frozen=True)
class _HeldoutComparison:
    clips: list[str]
    candidate: dict[str, tuple[str, str | None]]
    current: dict[str, tuple[str, str | None]] | None
    current_doc: dict[str, Any] | None

    def scores(self, predictions: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
        return heldout_scores([predictions[c][0] for c in self.clips], [predictions[c][1] for c in self.clips])


def _compare_heldout(layout: ServeLayout, system: str, candidate_dir: Path) -> _HeldoutComparison:
    """Candidate and current model on the same held-out clips."""
    candidate = predict_heldout(candidate_dir / "models", layout.features("heldout"))
    current_doc = json.loads(layout.current.read_text()) if layout.current.exists() else None
    current = (
        predict_heldout(layout.root / current_doc["model_dir"], layout.features("heldout")) if current_doc else None
    )
    compared = sorted(set(candidate) & set(current)) if current is not None else sorted(candidate)
    if not compared:
        raise ServeError(
            f"no held-out clip has features for {system}; see {layout.features('heldout')}/failures.parquet"
        )
    _write_json(
        candidate_dir / "heldout_predictions.json",
        {
            clip: {
                "true": candidate[clip][0],
                "candidate": candidate[clip][1],
                "current": current[clip][1] if current is not None else None,
            }
            for clip in compared
        },
    )
    return _HeldoutComparison(compared, candidate, current, current_doc)


@flow(name="retrain-cycle", log_prints=True)
def retrain_cycle(params_file: Path = Path("params.yaml")) -> CycleReport:
    """One cycle: find changed corpora, preprocess what is new, re-train, compare, promote or keep."""
    logger = get_run_logger()
    params = load_params(params_file)
    serve = params.serve
    layout = ServeLayout(serve.work_dir)
    spec = get_spec(serve.system)  # an unknown system fails before any work
    scan = scan_corpora_task(serve.corpora, params.ingest.workers)
    _root, rows, corpora = scan
    changes = _changes(layout, rows)
    if not changes.any:
        reason = f"no new or changed clips in {len(corpora)} corpora ({len(rows)} clips)"
        logger.info("%s; nothing to do", reason)
        _append_decision(
            layout, params, cycle=None, corpora=corpora, changes=changes.counts(), promoted=False, reason=reason
        )
        return CycleReport("none", changes.counts(), (), None, None, False, reason)

    heldout = _heldout_speakers(layout, params, {r.speaker for r in rows})
    cycle, candidate_dir = layout.new_candidate()
    logger.info("cycle %s: %s; held-out speakers %s", cycle, changes.counts(), ", ".join(heldout))
    computed = _preprocess_parts(layout, params, scan, heldout)
    cross_validation = _train_candidate(spec.name, params, layout, candidate_dir)
    comparison = _compare_heldout(layout, spec.name, candidate_dir)
    candidate_scores = comparison.scores(comparison.candidate)
    current_scores = comparison.scores(comparison.current) if comparison.current is not None else None
    decision = promotion_decision(candidate_scores["uar"], current_scores["uar"] if current_scores else None)
    record = {
        "cycle": cycle,
        "corpora": corpora,
        "changes": changes.counts(),
        "added": list(changes.added),
        "changed": list(changes.changed),
        "removed": list(changes.removed),
        "computed_clips": sorted(computed),
        "heldout_speakers": list(heldout),
        **_comparison_record(comparison, current_scores),
        "candidate": {
            "model_dir": str(candidate_dir.relative_to(layout.root) / "models"),
            "system": spec.name,
            "heldout": candidate_scores,
            "cross_validation_uar": cross_validation["uar"],
        },
        "promoted": decision.promoted,
        "reason": decision.reason,
    }
    _record(layout, params, record, scan, candidate_dir)
    current_uar = current_scores["uar"] if current_scores else None
    report = CycleReport(
        cycle,
        changes.counts(),
        tuple(sorted(computed)),
        candidate_scores["uar"],
        current_uar,
        decision.promoted,
        decision.reason,
    )
    logger.info("%s", report)
    return report


def _comparison_record(comparison: _HeldoutComparison, current: dict[str, Any] | None) -> dict[str, Any]:
    """What a decision records of the held-out comparison: clips, the current model's scores, the test."""
    matched = None
    if comparison.current is not None:
        matched = _matched_pairs(comparison.current, comparison.candidate, comparison.clips)
    return {
        "heldout_clips": len(comparison.clips),
        "current": comparison.current_doc and {**comparison.current_doc, "heldout": current},
        "matched_pairs": matched,
    }


def _record(layout: ServeLayout, params: Params, record: dict[str, Any], scan, candidate_dir: Path) -> None:
    """The decision into decisions.jsonl and the candidate's folder, the promotion, then the manifest."""
    root, rows, corpora = scan
    document = _append_decision(layout, params, **record)
    _write_json(candidate_dir / "decision.json", document)
    if record["promoted"]:
        _write_json(
            layout.current,
            {
                "cycle": record["cycle"],
                "model_dir": record["candidate"]["model_dir"],
                "system": record["candidate"]["system"],
                "promoted_at": document["written_at"],
            },
        )
    # Last: a cycle that failed before this point leaves the old manifest, so the next cycle retries it.
    write_table(
        manifest_table(rows),
        layout.manifest,
        schemas.MANIFEST,
        provenance(
            "serve", params.serve.model_dump(mode="json"), corpus_dir=str(root), corpora=corpora, cycle=record["cycle"]
        ),
    )


def serve_on_schedule(params: Params, params_file: Path) -> None:
    """Register the deployment and run its scheduled cycles until interrupted (Ctrl-C pauses it)."""
    if not PREFECT_API_URL.value():
        raise ServeError(
            "a schedule needs a running Prefect server, and Prefect's temporary one has no scheduler: run "
            "`prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api (or run one cycle with --once)"
        )
    serve(deployment(params, params_file))


def deployment(params: Params, params_file: Path) -> RunnerDeployment:
    """The deployment ``avemo serve`` runs: ``retrain_cycle`` on ``serve.cron``, one cycle at a time."""
    # to_deployment is async_dispatch'ed: called outside an event loop, as here, it returns the deployment itself
    return cast(
        RunnerDeployment,
        retrain_cycle.to_deployment(
            name=params.serve.deployment,
            schedule=Cron(params.serve.cron, timezone=params.serve.timezone),
            parameters={"params_file": str(Path(params_file).resolve())},
            concurrency_limit=1,
            entrypoint_type=EntrypointType.MODULE_PATH,
            description=retrain_cycle.__doc__,
        ),
    )
