"""What every avemo command shares: the app, the --params option, the logger, errors as exit codes."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from avemo.config import ConfigError, Params, load_params

app = typer.Typer(
    help="Audio-visual emotion recognition: corpus -> manifest -> Parquet features, versioned with DVC.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

ParamsOption = Annotated[Path, typer.Option("--params", help="The parameters file (missing: built-in defaults).")]

log = logging.getLogger("avemo")


def read_params(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as err:
        raise typer.BadParameter(str(err), param_hint="--params") from err


def fail(message: str) -> NoReturn:
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
