"""Shared fixtures: where the real test data lies, and one Prefect test harness per session.

``tests/unit`` mirrors the packages and runs in seconds per module (``make test-fast``); everything under
``tests/integration`` (flows end to end, the CLI, Dask, torchrun, real corpora) is marked ``slow``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
INTEGRATION = REPO / "tests" / "integration"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).is_relative_to(INTEGRATION):
            item.add_marker(pytest.mark.slow)


def _shared_data_dir() -> Path:
    return Path(os.environ.get("AVEMO_SHARED_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real corpora samples (CREMA-D, EmoDB, talking faces); never copied into the repo.

    Skips where they are absent, but fails under CI=true, where a skip would hide an untested path.
    """
    path = _shared_data_dir()
    if not (path / "cremad").is_dir():
        reason = f"real test data not found at {path} (set AVEMO_SHARED_DATA to its folder)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return path


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server and database for the whole session (its first start is slow)."""
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def sample_features(prefect_harness, tmp_path_factory) -> Path:
    """Features of a small built-in sample corpus (3 speakers x 2 emotions x 2 sentences), made once."""
    from avemo import schemas
    from avemo.config import PreprocessParams
    from avemo.parquet_io import write_table
    from avemo.provenance import provenance
    from flows.preprocess import run_preprocess
    from tasks.corpora.manifest import build_manifest, manifest_table
    from tasks.sample import write_sample_corpus

    root = tmp_path_factory.mktemp("sample_features")
    write_sample_corpus(root / "corpus", [1001, 1002, 1003], ["ANG", "SAD"], seed=0, sentences=("DFA", "IEO"))
    rows, _ = build_manifest(root / "corpus", "cremad", workers=2)
    manifest = root / "manifest.parquet"
    write_table(
        manifest_table(rows), manifest, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(root / "corpus"))
    )
    run_preprocess(manifest, root / "features", PreprocessParams(cache_dir=root / "cache"))
    return root / "features"


@pytest.fixture(scope="session")
def volume_ffmpeg() -> Callable[..., Path]:
    """Writes an ffmpeg wrapper that decodes differently (see :func:`write_volume_ffmpeg`)."""
    return write_volume_ffmpeg


def write_volume_ffmpeg(path: Path, version: str, volume: float = 0.5) -> Path:
    """An "ffmpeg" that is the bundled one with the audio scaled by ``volume``, reporting ``version``: a
    working decoder whose samples differ, so a pipeline that used it would give other features."""
    import imageio_ffmpeg

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "#!/bin/bash\n"
        f'if [ "$1" = "-version" ]; then echo "ffmpeg version {version} Copyright (c) wrapper"; exit 0; fi\n'
        "args=()\n"
        'for a in "$@"; do\n'
        f'  if [ "$a" = "pipe:" ] && [[ " $* " == *" s16le "* ]]; then args+=(-af volume={volume}); fi\n'
        '  args+=("$a")\n'
        "done\n"
        f'exec {imageio_ffmpeg.get_ffmpeg_exe()} "${{args[@]}}"\n'
    )
    path.chmod(0o755)
    return path
