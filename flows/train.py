"""The train flow: one system, speaker-independent folds, an ensemble of seeds per fold.

Each (fold, seed) run is a Prefect task; its checkpoint is written as soon as it finishes, so an
interrupted run keeps what it completed. The split is written to ``folds.parquet`` so an auditor can
check that no speaker is both trained and tested on.

Under ``torchrun`` every process trains every run together (``avemo.distributed``), so the runs go one
after another, in the same order on every process, inside the flow rather than as Prefect tasks. Rank 0
runs the Prefect flow, logs and writes the files; the other ranks run the same function without Prefect.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.task_runners import ThreadPoolTaskRunner

from avemo import schemas
from avemo.config import TrainParams
from avemo.distributed import barrier, current_world, process_group
from avemo.parquet_io import read_provenance, write_table
from avemo.provenance import provenance
from models.registry import ModelSpecError, get_spec
from tasks.learning.checkpoints import save_trained
from tasks.learning.features import Features, TaskLabels, load_features, task_labels
from tasks.learning.fit import fit
from tasks.learning.splits import Fold, folds_table, make_folds
from tasks.learning.trained import EpochRecord, TrainSettings


def checkpoint_path(out_dir: Path, fold: str, seed: int) -> Path:
    return out_dir / f"fold-{fold}-seed{seed}.pt"


@dataclass(frozen=True)
class RunSummary:
    fold: str
    seed: int
    best_epoch: int
    epochs_run: int
    best_val_uar: float | None
    seconds: float
    checkpoint: str


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger; torchrun's other ranks run without Prefect and log warnings only, since
    their progress repeats rank 0's."""
    try:
        return get_run_logger()
    except MissingContextError:
        quiet = logging.getLogger("avemo.train.other_ranks")
        quiet.setLevel(logging.WARNING)
        return quiet


def _epoch_logger(system: str, fold: str, seed: int, epochs: int):
    """One log line every eighth of the epochs (and the last), not one per batch or epoch."""
    logger = _logger()
    every = max(1, epochs // 8)

    def log(record: EpochRecord) -> None:
        if record.epoch % every == 0 or record.epoch == epochs:
            val = "" if record.val_uar is None else f", val UAR {record.val_uar:.3f}, val loss {record.val_loss:.3f}"
            logger.info(
                "%s fold %s seed %d epoch %d/%d: train loss %.3f%s (%.1f s)",
                system,
                fold,
                seed,
                record.epoch,
                epochs,
                record.train_loss,
                val,
                record.seconds,
            )

    return log


@task(name="fit-fold", cache_policy=NO_CACHE)
def fit_fold(
    system: str,
    features: Features,
    labels: TaskLabels,
    fold: Fold,
    seed: int,
    params: TrainParams,
    hyperparameters: dict[str, Any],
    out_dir: Path,
    feature_params: dict[str, Any] | None,
) -> RunSummary:
    started = time.perf_counter()
    trained = fit(
        system,
        features,
        labels,
        labels.labelled(fold.train_clips),
        labels.labelled(fold.val_clips),
        TrainSettings.of(params, seed),
        hyperparameters=hyperparameters,
        init_from=params.init_from,
        trainable=params.trainable,
        progress=_epoch_logger(system, fold.name, seed, params.epochs),
    )
    trained.extra.update(
        {
            "system": system,
            "fold": fold.name,
            "test_speakers": list(fold.test_speakers),
            "feature_params": feature_params,
            "processes": current_world().size,  # > 1: data-parallel under torchrun
        }
    )
    path = checkpoint_path(out_dir, fold.name, seed)
    if current_world().is_main:
        save_trained(path, trained)
    barrier()  # under torchrun the other ranks wait for the checkpoint
    best = next((r.val_uar for r in trained.history if r.epoch == trained.best_epoch), None)
    return RunSummary(
        fold.name, seed, trained.best_epoch, len(trained.history), best, time.perf_counter() - started, path.name
    )


@flow(name="train")
def train_flow(
    system: str, params: TrainParams, hyperparameters: dict[str, Any], out_dir: Path, frontend: str | None = None
) -> list[RunSummary]:
    """Train ``system`` on every fold and seed, reading the audio ``frontend`` (None: its paper's);
    checkpoints, folds.parquet and train.json go to ``out_dir``."""
    logger = _logger()
    world = current_world()
    spec = get_spec(system)
    features = load_features(params.features_dir, spec.needs, spec.input_kind, frontend)
    labels = task_labels(features, params.task)
    clips = labels.labelled(features.clip_ids)
    speaker_of = dict(zip(features.clip_ids, features.speakers, strict=True))
    split = params.split
    if spec.input_kind == "pooled":  # a classical system has no epochs to stop early: it learns from every speaker
        split = split.model_copy(update={"val_speakers": 0, "validation_speakers": []})
    folds = make_folds([speaker_of[c] for c in clips], clips, split)
    feature_prov = read_provenance(Path(params.features_dir) / "clips.parquet") or {}
    logger.info(
        "%s: %d clips of %d speakers, classes %s, %d folds x %d seeds (left out: %s)",
        system,
        len(clips),
        len(set(speaker_of[c] for c in clips)),
        ", ".join(labels.classes),
        len(folds),
        len(params.seeds),
        {**features.dropped, **labels.dropped} or "none",
    )
    if world.is_main:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_table(
            folds_table(folds),
            out_dir / "folds.parquet",
            schemas.FOLDS,
            provenance("train", params.model_dump(mode="json"), system=system),
        )
    run_args = [
        (system, features, labels, fold, seed, params, hyperparameters, out_dir, feature_prov.get("params"))
        for fold in folds
        for seed in params.seeds
    ]
    if world.size > 1:  # every rank trains each run together: in order, not as concurrent tasks
        summaries = [fit_fold.fn(*args) for args in run_args]
    else:
        runs = [fit_fold.submit(*args) for args in run_args]
        summaries = [run.result() for run in runs]
    if not world.is_main:
        return summaries
    document = provenance(
        "train",
        params.model_dump(mode="json"),
        system=system,
        frontend=features.audio_frontend if "audio" in spec.needs else None,
        hyperparameters=hyperparameters,
        classes=list(labels.classes),
        left_out=({**features.dropped, **labels.dropped}),
        features=str(params.features_dir),
        features_sources=feature_prov.get("sources"),
        runs=[dataclasses.asdict(s) for s in summaries],
        processes=world.size,
    )
    (out_dir / "train.json").write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    return summaries


def run_train(
    system: str, params: TrainParams, hyperparameters: dict[str, Any], out_dir: Path, frontend: str | None = None
) -> list[RunSummary]:
    """The train flow; under torchrun, in the process group, as a Prefect flow on rank 0 only."""
    spec = get_spec(system)  # an unknown system fails here, before a process group or Prefect's server starts
    if frontend is not None and not set(frontend.split("+")) <= set(spec.frontends):
        raise ModelSpecError(
            f"{system} reads the audio front-ends {', '.join(spec.frontends) or 'none'}, not {frontend!r}"
        )
    with process_group(params.device) as world:
        if not world.is_main:
            return train_flow.fn(
                system=system, params=params, hyperparameters=hyperparameters, out_dir=out_dir, frontend=frontend
            )
        # Prefect stub limit: with_options takes a TaskRunner[PrefectFuture[Any]], invariant, so no concrete runner fits
        runner: ThreadPoolTaskRunner[Any] = ThreadPoolTaskRunner(max_workers=params.workers)
        configured = train_flow.with_options(task_runner=runner)  # type: ignore[arg-type]
        return configured(
            system=system, params=params, hyperparameters=hyperparameters, out_dir=out_dir, frontend=frontend
        )
