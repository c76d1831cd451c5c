"""The ``avemo`` command: one subcommand per pipeline stage, the very commands ``dvc.yaml`` runs.

Every option defaults to its entry in ``params.yaml`` (``--params`` picks another file), so a stage
run by hand and the same stage run by ``dvc repro`` do the same thing.

``common``: the app and what every command shares; ``pipeline``: the stages ``dvc.yaml`` runs (sample,
ingest, preprocess, train, evaluate, compare, report); ``use``: what is done with trained models
(predict, serve, audit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys

from avemo.cli import pipeline, use
from avemo.cli.common import app

__all__ = ["app", "main", "pipeline", "use"]


def main() -> None:
    """The console entry: the command, then, when it loaded torch and not Prefect (``predict``), the
    process ends without Python's teardown of torch's modules, which takes ~0.7 s and frees only what
    the OS frees anyway. Prefect's exit handlers (sending the last logs to a server) always run."""
    try:
        app()
        code: int | str | None = 0
    except SystemExit as end:
        code = end.code
    if "torch" not in sys.modules or "prefect" in sys.modules:
        sys.exit(code)
    if isinstance(code, str):
        print(code, file=sys.stderr)
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(BrokenPipeError):  # the reader left (`avemo predict ... | head`)
            stream.flush()
    os._exit(code if isinstance(code, int) else 0 if code is None else 1)
