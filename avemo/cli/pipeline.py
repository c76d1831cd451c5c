"""The pipeline's stages, each the command its ``dvc.yaml`` stage runs."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Annotated

import typer

from avemo.cli.common import ParamsOption, app, fail, log, read_params
from avemo.config import CorpusFormat
from avemo.errors import AvemoError


@app.command()
def sample(
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write the corpus to.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the built-in sample corpus: synthetic CREMA-D-named talking-face clips, no download.

    Example: avemo sample --out data/sample_corpus
    """
    from flows.sample import run_sample

    p = read_params(params_file).sample
    started = time.perf_counter()
    try:
        paths = run_sample(out or p.out_dir, p)
    except AvemoError as err:
        fail(str(err))
    typer.echo(f"wrote {len(paths)} clips to {out or p.out_dir} in {time.perf_counter() - started:.1f} s")


@app.command()
def ingest(
    corpus_dir: Annotated[Path | None, typer.Argument(help="The corpus folder.")] = None,
    format: Annotated[
        str | None, typer.Option("--format", help="cremad, ravdess, enterface, mead, emodb or csv.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Manifest Parquet file to write.")] = None,
    csv: Annotated[Path | None, typer.Option("--csv", help="--format csv: the path,speaker,label file.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Read a corpus folder into a validated clip manifest (labels, speakers, sha256, stream facts).

    Examples:
      avemo ingest ~/corpora/CREMA-D --format cremad --out data/manifest.parquet
      avemo ingest ~/my_videos --format csv --csv ~/my_videos/labels.csv --out data/manifest.parquet
    """
    from flows.ingest import run_ingest

    p = read_params(params_file).ingest
    corpus_dir = corpus_dir or p.corpus_dir
    corpus_format: CorpusFormat = format or p.format  # type: ignore[assignment]
    out = out or p.manifest
    try:
        summary = run_ingest(corpus_dir, corpus_format, out, p, csv or p.csv, log)
    except AvemoError as err:
        fail(str(err))
    typer.echo(
        f"{len(summary.rows)} clips -> {out} ({summary.unreadable} could not be probed and will be listed as failures)"
    )
    for reason, count in Counter(s.reason for s in summary.skipped).most_common():
        typer.echo(f"  skipped {count} file(s): {reason}")


@app.command()
def preprocess(
    manifest: Annotated[Path | None, typer.Argument(help="The manifest written by `avemo ingest`.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the feature Parquet files.")] = None,
    workers: Annotated[int | None, typer.Option("--workers", help="Clips processed at once.")] = None,
    dask: Annotated[
        str | None,
        typer.Option(
            "--dask", metavar="ADDRESS", help="Run the clips on the Dask scheduler at ADDRESS (tcp://HOST:8786)."
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Run even when the features are up to date.")] = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Turn a manifest into Parquet features: segments with log-mel images, face crops and embeddings.

    Features already written from the same manifest, params, code and tools are left as they are (in about a
    second); otherwise every unchanged per-clip stage is reused from preprocess.cache_dir.

    Examples:
      avemo preprocess data/manifest.parquet --out data/features
      avemo preprocess --dask tcp://scheduler-host:8786   (workers share the corpus and cache_dir paths)
    """
    from avemo.freshness import up_to_date

    params = read_params(params_file)
    p = params.preprocess
    if workers is not None:
        p = p.model_copy(update={"workers": workers})
    if dask is not None:
        p = p.model_copy(update={"dask_address": dask})
    manifest = manifest or params.ingest.manifest
    if not manifest.exists():
        fail(f"manifest {manifest} not found; write it first with `avemo ingest CORPUS_DIR --out {manifest}`")
    out = out or p.out_dir
    try:
        if not force and up_to_date(manifest, out, p):
            typer.echo(f"{out} is up to date with {manifest}, the params, code and tools: nothing to do (--force runs)")
            return
        from flows.preprocess import run_preprocess

        summary = run_preprocess(manifest, out, p)
    except AvemoError as err:
        fail(str(err))
    typer.echo(str(summary))


def _system_option(help_text: str):
    return typer.Option("--system", "-s", help=help_text)


@app.command()
def train(
    system: Annotated[str, _system_option("The system to train: avef, gfbp, agfbp, mfbp, amfbp, concat, ...")],
    features: Annotated[Path | None, typer.Option("--features", help="The features folder.")] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for checkpoints (default train.out_dir/SYSTEM).")
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Train a system speaker-independently: one model per fold and seed, checkpoints and the split.

    Examples:
      avemo train --system gfbp
      avemo train --system audio --features data/emodb/features --out data/models/emodb-audio
      torchrun --standalone --nproc_per_node 4 --no-python avemo train --system gfbp   # one process per GPU
    """
    from avemo.distributed import is_main_process
    from flows.train import run_train

    params = read_params(params_file)
    try:
        choice = params.system(system)
        p = choice.train if features is None else choice.train.model_copy(update={"features_dir": features})
        summaries = run_train(system, p, choice.hyperparameters, out or p.out_dir / system, choice.frontend)
    except AvemoError as err:
        fail(str(err))
    if not is_main_process():  # under torchrun, rank 0 reports
        return
    for s in summaries:
        uar = "n/a" if s.best_val_uar is None else f"{s.best_val_uar:.3f}"
        typer.echo(
            f"fold {s.fold} seed {s.seed}: best epoch {s.best_epoch}/{s.epochs_run}, val UAR {uar}, {s.seconds:.0f} s"
        )


@app.command()
def evaluate(
    system: Annotated[str, _system_option("The trained system to evaluate.")],
    features: Annotated[Path | None, typer.Option("--features", help="The features folder.")] = None,
    models_dir: Annotated[
        Path | None, typer.Option("--models", help="Its checkpoints (default train.out_dir/SYSTEM).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Report folder (default evaluate.out_dir/SYSTEM).")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Score a trained system on each fold's test speakers: predictions, metrics.json and plot data.

    Example: avemo evaluate --system gfbp && dvc metrics show
    """
    from flows.evaluate import evaluate_flow

    params = read_params(params_file)
    try:
        metrics = evaluate_flow(
            system=system,
            model_dir=models_dir or params.train.out_dir / system,
            features_dir=features or params.train.features_dir,
            out_dir=out or params.evaluate.out_dir / system,
        )
    except (AvemoError, FileNotFoundError) as err:
        fail(str(err))
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

    from flows.evaluate import compare_predictions

    try:
        result = compare_predictions(baseline, candidate)
    except ValueError as err:
        fail(str(err))
    typer.echo(json.dumps(dataclasses.asdict(result), indent=2))


@app.command()
def report(
    systems: Annotated[
        list[str] | None,
        typer.Option("--systems", help="Systems to report on, comma-separated or repeated (default: train.systems)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for report.html and figures/ (default report.out_dir).")
    ] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Write one self-contained HTML report of the evaluated systems, and a PNG copy of each figure.

    It holds the metrics per system and fold, confusion matrices, per-class recall, learning curves, and
    the papers' analysis figures: attention over the frames of example clips, AG-FBP's audio factor per
    emotion, a t-SNE map of the clip embeddings. Images are embedded: the file opens offline.

    Examples:
      avemo report
      avemo report --systems gfbp,agfbp,amfbp --out /tmp/fbp-report
    """
    from flows.report import build_report

    params = read_params(params_file)
    p = params.report
    names = [name.strip() for item in systems or [] for name in item.split(",") if name.strip()] or params.train.systems
    started = time.perf_counter()
    try:
        summary = build_report(
            names,
            eval_dir=params.evaluate.out_dir,
            models_dir=params.train.out_dir,
            features_dir=params.train.features_dir,
            out_dir=out or p.out_dir,
            settings=p,
        )
    except ValueError as err:
        fail(str(err))
    for note in summary.notes:
        typer.echo(f"note: {note}")
    size = summary.html.stat().st_size / 1e6
    typer.echo(
        f"{summary.html} ({size:.1f} MB, {len(summary.figures)} figures, "
        f"PNG copies in {summary.html.parent / 'figures'}) "
        f"in {time.perf_counter() - started:.1f} s"
    )
