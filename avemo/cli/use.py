"""What is done with trained models: predict files, serve scheduled re-training, audit features."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from avemo.cli.common import ParamsOption, app, fail, log, read_params
from avemo.errors import AvemoError


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

    params = read_params(params_file)
    try:
        if once:
            typer.echo(str(retrain_cycle(params_file=params_file)))
        else:
            serve_on_schedule(params, params_file)
    except AvemoError as err:
        fail(str(err))


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
        fail(str(err))
    typer.echo(json.dumps(result.to_json(), indent=2, default=str) if as_json else render_verification(result))
    if not result.clean:
        raise typer.Exit(code=1)


MediaArgument = Annotated[
    list[Path] | None,
    typer.Argument(
        metavar="FILE", help="Video or audio files (default: predict.inputs, or --speakers' files).", show_default=False
    ),
]
ModelOption = Annotated[
    Path | None,
    typer.Option(
        "--model",
        "-m",
        help="A checkpoint file, or a model folder (data/models/SYSTEM): a folder runs all its fold and seed "
        "checkpoints and averages their posteriors. Default: predict.model.",
    ),
]
SpeakerOption = Annotated[
    str | None, typer.Option("--speaker", help="All files are this one speaker's.", show_default=False)
]
SpeakersOption = Annotated[
    Path | None,
    typer.Option(
        "--speakers",
        help="Each file's speaker: a CSV with columns path,speaker (paths from the CSV's folder) or an avemo "
        "manifest (data/manifest.parquet).",
        show_default=False,
    ),
]
FormatOption = Annotated[str | None, typer.Option("--format", help="json or csv (default: predict.format).")]
OutOption = Annotated[Path | None, typer.Option("--out", help="File to write (default: standard output).")]
WindowOption = Annotated[
    float | None, typer.Option("--window-s", help="Longer files are processed this many seconds at a time.")
]
PredictParamsOption = Annotated[
    Path | None,
    typer.Option(
        "--params",
        help="Read the predict section from FILE and refuse if its preprocess feature settings differ from the "
        "checkpoint's (default: params.yaml, not compared; features always use the checkpoint's settings).",
    ),
]


@app.command()
def predict(
    media: MediaArgument = None,
    model: ModelOption = None,
    speaker: SpeakerOption = None,
    speakers: SpeakersOption = None,
    output_format: FormatOption = None,
    out: OutOption = None,
    window_s: WindowOption = None,
    params_file: PredictParamsOption = None,
) -> None:
    """Emotion of video or audio files, with a timeline of their 655 ms speech segments, as JSON or CSV.

    Per file: its emotion and class probabilities; per kept segment: t_begin, t_end, emotion, probabilities,
    face found, voiced share.

    Files go through the training pipeline's own preprocessing, with the feature settings stored in the
    checkpoint. A speaker-normalised model (train.speaker_normalisation) standardises each speaker over its
    own files, as evaluation does: name them with --speaker or --speakers, or files of an unknown speaker
    use a typical training speaker's statistics. Audio-only files need a model trained on audio only.
    Files longer than --window-s are processed a window at a time, in bounded memory.

    Examples:
      avemo predict clip.mp4 --model data/models/gfbp
      avemo predict a.mp4 b.wav -m data/models/audio --speaker anna --format csv --out ab.csv
      avemo predict --speakers data/manifest.parquet -m data/models/avef/fold-loso-1001-seed0.pt
    """
    from flows.predict import predict_files, render

    params = read_params(params_file or Path("params.yaml"))
    p = params.predict
    files = list(media or ([] if speakers else p.inputs))
    model = model or p.model
    output_format = output_format or p.format
    if not files and speakers is None:
        fail("name the video or audio files to predict (or list them under predict.inputs in params.yaml)")
    if model is None:
        fail("pass --model CHECKPOINT or --model data/models/SYSTEM (or set predict.model in params.yaml)")
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
            speaker=speaker,
            speaker_table=speakers,
            compare_with=(params.preprocess, params_file) if params_file is not None else None,
        )
    except AvemoError as err:
        fail(str(err))
    _write_predictions(render(run, output_format), out, f"{len(run.results)} file(s) predicted with {model}")
    for failure in run.failures:
        typer.secho(f"error: {failure.file}: {failure.stage}: {failure.reason}", fg=typer.colors.RED, err=True)
    if run.failures:
        raise typer.Exit(code=1)


def _write_predictions(text: str, out: Path | None, summary: str) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    log.info("%s -> %s", summary, out)
