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
from typing import Annotated, NoReturn

import typer

from avemo.config import ConfigError, CorpusFormat, Params, load_params
from avemo.errors import AvemoError

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


def _fail(message: str) -> NoReturn:
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
    out: Annotated[Path | None, typer.Option("--out", help="Folder to write the corpus to.")] = None,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Write the built-in sample corpus: synthetic CREMA-D-named talking-face clips, no download.

    Example: avemo sample --out data/sample_corpus
    """
    from flows.sample import run_sample

    p = _params(params_file).sample
    started = time.perf_counter()
    try:
        paths = run_sample(out or p.out_dir, p)
    except AvemoError as err:
        _fail(str(err))
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

    p = _params(params_file).ingest
    corpus_dir = corpus_dir or p.corpus_dir
    corpus_format: CorpusFormat = format or p.format  # type: ignore[assignment]
    out = out or p.manifest
    try:
        summary = run_ingest(corpus_dir, corpus_format, out, p, csv or p.csv, log)
    except AvemoError as err:
        _fail(str(err))
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
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Turn a manifest into Parquet features: segments with log-mel images, face crops and embeddings.

    Re-running reuses every unchanged per-clip stage from preprocess.cache_dir.

    Examples:
      avemo preprocess data/manifest.parquet --out data/features
      avemo preprocess --dask tcp://scheduler-host:8786   (workers share the corpus and cache_dir paths)
    """
    from flows.preprocess import run_preprocess

    params = _params(params_file)
    p = params.preprocess
    if workers is not None:
        p = p.model_copy(update={"workers": workers})
    if dask is not None:
        p = p.model_copy(update={"dask_address": dask})
    manifest = manifest or params.ingest.manifest
    if not manifest.exists():
        _fail(f"manifest {manifest} not found; write it first with `avemo ingest CORPUS_DIR --out {manifest}`")
    try:
        summary = run_preprocess(manifest, out or p.out_dir, p)
    except AvemoError as err:
        _fail(str(err))
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

    params = _params(params_file)
    try:
        choice = params.system(system)
        p = choice.train if features is None else choice.train.model_copy(update={"features_dir": features})
        summaries = run_train(system, p, choice.hyperparameters, out or p.out_dir / system, choice.frontend)
    except AvemoError as err:
        _fail(str(err))
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

    params = _params(params_file)
    try:
        metrics = evaluate_flow(
            system=system,
            model_dir=models_dir or params.train.out_dir / system,
            features_dir=features or params.train.features_dir,
            out_dir=out or params.evaluate.out_dir / system,
        )
    except (AvemoError, FileNotFoundError) as err:
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

    from flows.evaluate import compare_predictions

    try:
        result = compare_predictions(baseline, candidate)
    except ValueError as err:
        _fail(str(err))
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

    params = _params(params_file)
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
        _fail(str(err))
    for note in summary.notes:
        typer.echo(f"note: {note}")
    size = summary.html.stat().st_size / 1e6
    typer.echo(
        f"{summary.html} ({size:.1f} MB, {len(summary.figures)} figures, "
        f"PNG copies in {summary.html.parent / 'figures'}) "
        f"in {time.perf_counter() - started:.1f} s"
    )


@app.command()
def serve(
    once: Annotated[bool, typer.Option("--once", help="Run one re-training cycle now instead of serving.")] = False,
    params_file: ParamsOption = Path("params.yaml"),
) -> None:
    """Re-train on new or changed corpora on the schedule in serve.cron; keep the better model.

    Serving registers a Prefect deployment and waits for its scheduled runs (Ctrl-C stops it). The
    schedule needs a Prefect server: `prefect server start`, then set PREFECT_API_URL.

    Examples:
      avemo serve --once
      PREFECT_API_URL=http://127.0.0.1:4200/api avemo serve
    """
    from flows.serve import retrain_cycle, serve_on_schedule

    params = _params(params_file)
    try:
        if once:
            typer.echo(str(retrain_cycle(params_file=params_file)))
        else:
            serve_on_schedule(params, params_file)
    except AvemoError as err:
        _fail(str(err))


@app.command()
def audit(
    path: Annotated[Path, typer.Argument(help="An avemo Parquet output or a checkpoint (.pt).")],
    clip: Annotated[str | None, typer.Option("--clip", help="Narrow the audit to one clip id.")] = None,
    verify: Annotated[
        bool, typer.Option("--verify", help="Re-hash the sources, re-compute a sample of rows; exit 1 on drift.")
    ] = False,
    sample: Annotated[
        int, typer.Option("--sample", min=0, help="--verify: clips whose rows are re-computed (seeded sample).")
    ] = 3,
    faces: Annotated[
        bool, typer.Option("--faces", help="--verify: also re-run the face stages (MTCNN, seconds per clip).")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Where did this file come from? Sources and sha256, params, version, commit, tools, timing, DVC stage.

    --verify re-hashes every source, compares the file with dvc.lock, re-computes a sample of rows.
    Each drift is printed (file, what changed, what to do) and the exit code is 1; 0 when all agrees.

    Examples:
      avemo audit data/features/segments.parquet
      avemo audit data/features/segments.parquet --clip 1001_DFA_ANG_XX --verify
      avemo audit data/models/gfbp/fold-loso-1001-seed0.pt --json
      avemo audit data/eval/gfbp/predictions.parquet --verify --sample 5
    """
    import json

    from flows.audit import describe, render, render_verification
    from flows.audit import verify as verify_path

    try:
        if not verify:
            record = describe(path, clip)
            typer.echo(json.dumps(record.to_json(), indent=2, default=str) if as_json else render(record))
            return
        result = verify_path(path, sample=sample, clip=clip, faces=faces)
    except AvemoError as err:
        _fail(str(err))
    typer.echo(json.dumps(result.to_json(), indent=2, default=str) if as_json else render_verification(result))
    if not result.clean:
        raise typer.Exit(code=1)


@app.command()
def predict(
    media: Annotated[
        list[Path] | None,
        typer.Argument(metavar="FILE", help="Video or audio files (default: predict.inputs).", show_default=False),
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="A checkpoint file, or a model folder (data/models/SYSTEM): a folder runs all its fold and seed "
            "checkpoints and averages their posteriors. Default: predict.model.",
        ),
    ] = None,
    output_format: Annotated[
        str | None, typer.Option("--format", help="json or csv (default: predict.format).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="File to write (default: standard output).")] = None,
    window_s: Annotated[
        float | None, typer.Option("--window-s", help="Longer files are processed this many seconds at a time.")
    ] = None,
    params_file: Annotated[
        Path | None,
        typer.Option(
            "--params",
            help="Read the predict section from FILE and refuse if its preprocess feature settings differ from the "
            "checkpoint's (default: params.yaml, not compared; features always use the checkpoint's settings).",
        ),
    ] = None,
) -> None:
    """Emotion of video or audio files, with a timeline of their 655 ms speech segments, as JSON or CSV.

    Per file: its emotion and class probabilities; per kept segment: t_begin, t_end, emotion, probabilities,
    face found, voiced share.

    Files go through the training pipeline's own preprocessing, with the feature settings stored in the
    checkpoint. Audio-only files need a model trained on audio only (audio, avef_audio). Files longer than
    --window-s are processed a window at a time, in bounded memory.

    Examples:
      avemo predict clip.mp4 --model data/models/gfbp
      avemo predict a.mp4 b.wav -m data/models/audio --format csv --out ab.csv
      avemo predict talk.mp4 -m data/models/avef/fold-loso-1001-seed0.pt
    """
    from flows.predict import predict_files, render

    params = _params(params_file or Path("params.yaml"))
    p = params.predict
    files = list(media or p.inputs)
    model = model or p.model
    output_format = output_format or p.format
    if not files:
        _fail("name the video or audio files to predict (or list them under predict.inputs in params.yaml)")
    if model is None:
        _fail("pass --model CHECKPOINT or --model data/models/SYSTEM (or set predict.model in params.yaml)")
    if output_format not in ("json", "csv"):
        raise typer.BadParameter(f"{output_format!r}: use json or csv", param_hint="--format")
    try:
        run = predict_files(
            files,
            model,
            device=p.device,
            window_s=window_s or p.window_s,
            batch_size=p.batch_size,
            logger=log,
            compare_with=(params.preprocess, params_file) if params_file is not None else None,
        )
    except AvemoError as err:
        _fail(str(err))
    text = render(run, output_format)
    if out is None:
        typer.echo(text, nl=False)
    else:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        log.info("%d file(s) predicted with %s -> %s", len(run.results), model, out)
    for failure in run.failures:
        typer.secho(f"error: {failure.file}: {failure.stage}: {failure.reason}", fg=typer.colors.RED, err=True)
    if run.failures:
        raise typer.Exit(code=1)


def main() -> None:  # pragma: no cover - console entry
    app()
