"""Shared fixtures: where the real test data lies, and one Prefect test harness per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


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
