"""The ``avemo`` command: one subcommand per pipeline stage, the very commands ``dvc.yaml`` runs.

Every option defaults to its entry in ``params.yaml`` (``--params`` picks another file), so a stage
run by hand and the same stage run by ``dvc repro`` do the same thing.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from pathlib import Path
from typing import Annotated, Optional

import typer

from avemo.config import ConfigError, CorpusFormat, Params, load_params

app = typer.Typer(
    help="Audio-visual emotion recognition: corpus -> manifest -> Parquet features, versioned with DVC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The parameters file (missing: built-in defaults).")]

log = logging.getLogger("avemo")


def _params(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--params") from err


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's temporary server gets 20 s to start by default: too little on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


@app.command()
def sample(
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder to write the corpus to.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the built-in sample corpus: synthetic CREMA-D-named talking-face clips, no download.

    Example: avemo sample --out data/sample_corpus
    """
    from tasks.sample import SampleError, write_sample_corpus

    p = _params(params_file).sample
    started = time.perf_counter()
    try:
        paths = write_sample_corpus(out or p.out_dir, p.speakers, p.emotions, p.seed, p.sentences)
    except SampleError as err:
        _fail(str(err))
    typer.echo(f"wrote {len(paths)} clips to {out or p.out_dir} in {time.perf_counter() - started:.1f} s")


@app.command()
def ingest(
    corpus_dir: Annotated[Optional[Path], typer.Argument(help="The corpus folder.")] = None,
    format: Annotated[
        Optional[str], typer.Option("--format", help="cremad, ravdess, enterface, mead, emodb or csv.")
    ] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Manifest Parquet file to write.")] = None,
    csv: Annotated[Optional[Path], typer.Option("--csv", help="--format csv: the path,speaker,label file.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Read a corpus folder into a validated clip manifest (labels, speakers, sha256, stream facts).

    Examples:
      avemo ingest ~/corpora/CREMA-D --format cremad --out data/manifest.parquet
      avemo ingest ~/my_videos --format csv --csv ~/my_videos/labels.csv --out data/manifest.parquet
    """
    from avemo import schemas
    from avemo.parquet_io import write_table
    from avemo.progress import Progress
    from avemo.provenance import provenance
    from tasks.ingest import ManifestError, build_manifest, manifest_table

    p = _params(params_file).ingest
    corpus_dir = corpus_dir or p.corpus_dir
    corpus_format: CorpusFormat = format or p.format  # type: ignore[assignment]
    out = out or p.manifest
    started = time.perf_counter()
    progress: Progress | None = None

    def report(done: int, total: int) -> None:
        nonlocal progress
        progress = progress or Progress(total, "files probed", log)
        progress.advance(done - progress.done)

    try:
        rows, skipped = build_manifest(corpus_dir, corpus_format, p.workers, csv or p.csv, report)
    except ManifestError as err:
        _fail(str(err))
    document = provenance(
        "ingest",
        {**p.model_dump(mode="json"), "corpus_dir": str(corpus_dir), "format": corpus_format},
        corpus_dir=str(corpus_dir),
        skipped=[{"path": s.path, "reason": s.reason} for s in skipped],
        seconds=time.perf_counter() - started,
    )
    write_table(manifest_table(rows), out, schemas.MANIFEST, document)
    unreadable = sum(r.probe_error is not None for r in rows)
    typer.echo(f"{len(rows)} clips -> {out} ({unreadable} could not be probed and will be listed as failures)")
    for reason, count in Counter(s.reason for s in skipped).most_common():
        typer.echo(f"  skipped {count} file(s): {reason}")


@app.command()
def preprocess(
    manifest: Annotated[Optional[Path], typer.Argument(help="The manifest written by `avemo ingest`.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for the feature Parquet files.")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", help="Clips processed at once.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Turn a manifest into Parquet features: segments with log-mel images, face crops and embeddings.

    Re-running reuses every unchanged per-clip stage from preprocess.cache_dir.

    Example: avemo preprocess data/manifest.parquet --out data/features
    """
    from flows.preprocess import run_preprocess

    params = _params(params_file)
    p = params.preprocess
    if workers is not None:
        p = p.model_copy(update={"workers": workers})
    manifest = manifest or params.ingest.manifest
    if not manifest.exists():
        _fail(f"manifest {manifest} not found; write it first with `avemo ingest CORPUS_DIR --out {manifest}`")
    summary = run_preprocess(manifest, out or p.out_dir, p)
    typer.echo(str(summary))


def _system_option(help_text: str):
    return typer.Option("--system", "-s", help=help_text)


@app.command()
def train(
    system: Annotated[str, _system_option("The system to train: avef, gfbp, agfbp, mfbp, amfbp, concat, ...")],
    features: Annotated[Optional[Path], typer.Option("--features", help="The features folder.")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Folder for checkpoints (default train.out_dir/SYSTEM).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Train a system speaker-independently: one model per fold and seed, checkpoints and the split.

    Examples:
      avemo train --system gfbp
      avemo train --system audio --features data/emodb/features --out data/models/emodb-audio
    """
    from flows.train import run_train
    from models.registry import ModalityError, ModelSpecError, get_spec

    params = _params(params_file)
    p = params.train if features is None else params.train.model_copy(update={"features_dir": features})
    try:
        get_spec(system)
        summaries = run_train(system, p, params.models.get(system, {}), out or p.out_dir / system)
    except (ModalityError, ModelSpecError) as err:
        _fail(str(err))
    for s in summaries:
        uar = "n/a" if s.best_val_uar is None else f"{s.best_val_uar:.3f}"
        typer.echo(f"fold {s.fold} seed {s.seed}: best epoch {s.best_epoch}/{s.epochs_run}, val UAR {uar}, {s.seconds:.0f} s")


@app.command()
def evaluate(
    system: Annotated[str, _system_option("The trained system to evaluate.")],
    features: Annotated[Optional[Path], typer.Option("--features", help="The features folder.")] = None,
    models_dir: Annotated[Optional[Path], typer.Option("--models", help="Its checkpoints (default train.out_dir/SYSTEM).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Report folder (default evaluate.out_dir/SYSTEM).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Score a trained system on each fold's test speakers: predictions, metrics.json and plot data.

    Example: avemo evaluate --system gfbp && dvc metrics show
    """
    from flows.evaluate import EvaluateInputError, evaluate_flow

    params = _params(params_file)
    try:
        metrics = evaluate_flow(
            system=system,
            model_dir=models_dir or params.train.out_dir / system,
            features_dir=features or params.train.features_dir,
            out_dir=out or params.evaluate.out_dir / system,
        )
    except (EvaluateInputError, FileNotFoundError) as err:
        _fail(str(err))
    typer.echo(
        f"{system}: UAR {metrics['uar']:.3f}, accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} "
        f"on {metrics['clips']} clips; per fold: "
        + ", ".join(f"{fold} {uar:.3f}" for fold, uar in metrics["fold_uar"].items())
    )


@app.command()
def compare(
    baseline: Annotated[Path, typer.Argument(help="predictions.parquet of the baseline system.")],
    candidate: Annotated[Path, typer.Argument(help="predictions.parquet of the candidate system.")],
) -> None:
    """Matched-pairs significance test of two systems on the same clips (am-fbp Table IV/V).

    Example: avemo compare data/eval/gfbp/predictions.parquet data/eval/agfbp/predictions.parquet
    """
    import dataclasses
    import json

    from avemo import schemas
    from avemo.parquet_io import read_table
    from tasks.evaluate import compare_systems

    try:
        result = compare_systems(read_table(baseline, schemas.PREDICTIONS), read_table(candidate, schemas.PREDICTIONS))
    except ValueError as err:
        _fail(str(err))
    typer.echo(json.dumps(dataclasses.asdict(result), indent=2))


def main() -> None:  # pragma: no cover - console entry
    app()
