"""Provenance: what produced an artifact, stored inside it so an auditor needs nothing else.

Every Parquet file avemo writes carries a JSON document under the schema metadata key
``avemo.provenance``: the avemo version and git commit, the exact parameters of the stage, the versions
of the tools that shaped the numbers, when and how long the stage ran, and the sha256 of every source.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

import avemo

PROVENANCE_KEY = b"avemo.provenance"
REPO_ROOT = Path(__file__).resolve().parents[1]

# Distributions whose versions change feature values or model results.
TOOL_DISTRIBUTIONS = (
    "webrtcvad-wheels",
    "librosa",
    "facenet-pytorch",
    "torch",
    "torchvision",
    "pyarrow",
    "numpy",
    "scikit-learn",
    "prefect",
    "what-the-face-classification",
)


@functools.cache
def git_commit() -> dict[str, Any]:
    """The commit of the avemo checkout that runs, and whether its tracked files differ from it."""

    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(
                ["git", "-C", str(REPO_ROOT), *args], capture_output=True, text=True, check=True, timeout=10
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip()

    commit = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "avemo", "tasks", "flows", "models")
    return {"commit": commit, "dirty": bool(dirty) if dirty is not None else None}


@functools.cache
def tool_versions(ffmpeg_setting: str = "bundled") -> dict[str, str]:
    """The versions of the tools that shape outputs; ``ffmpeg`` is the decoder ``ffmpeg_setting`` names."""
    from avemo.ffmpeg import decoder

    versions = {"ffmpeg": decoder(ffmpeg_setting).version}
    for dist in TOOL_DISTRIBUTIONS:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


@functools.cache
def code_version(*modules: str) -> str:
    """A digest of the source of the given modules: a cache key that changes when their code does.

    Computed once per process: every clip's cache keys use it, and the source does not change mid-run.
    """
    digest = hashlib.sha256(avemo.__version__.encode())
    for module in sorted(modules):
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        digest.update(module.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def provenance(stage: str, params: dict[str, Any], ffmpeg_setting: str = "bundled", **extra: Any) -> dict[str, Any]:
    """The provenance document of one stage's output; a stage that decodes names its decoder setting."""
    return {
        "stage": stage,
        "avemo_version": avemo.__version__,
        "git": git_commit(),
        "params": params,
        "tools": tool_versions(ffmpeg_setting),
        "written_at": now_iso(),
        **extra,
    }


def encode(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, default=str).encode()


def decode(raw: bytes | None) -> dict[str, Any] | None:
    return None if raw is None else json.loads(raw)
