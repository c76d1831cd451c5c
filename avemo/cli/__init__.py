"""The ``avemo`` command: one subcommand per pipeline stage, the very commands ``dvc.yaml`` runs.

Every option defaults to its entry in ``params.yaml`` (``--params`` picks another file), so a stage
run by hand and the same stage run by ``dvc repro`` do the same thing.

``common``: the app and what every command shares; ``pipeline``: the stages ``dvc.yaml`` runs (sample,
ingest, preprocess, train, evaluate, compare, report); ``use``: what is done with trained models
(predict, serve, audit).
"""

from __future__ import annotations

from avemo.cli import pipeline, use
from avemo.cli.common import app

__all__ = ["app", "main", "pipeline", "use"]


def main() -> None:  # pragma: no cover - console entry
    app()
