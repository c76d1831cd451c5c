"""The preprocess flow: a clip manifest in, the Parquet features of every clip out.

Each stage of ``tasks.clip`` is a Prefect task mapped over the clips, so Prefect runs clips in
parallel (``preprocess.workers``) and records every stage of every clip. Rows are written in manifest
order as clips complete, so the output is the same whatever the completion order.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import distributed
import httpx
import pyarrow as pa
import torch
from prefect import flow, get_run_logger, task, unmapped
from prefect.cache_policies import NO_CACHE
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner
from prefect_dask import DaskTaskRunner
from threadpoolctl import threadpool_info, threadpool_limits

from avemo import schemas
from avemo.cache import StageCache
from avemo.config import PreprocessParams
from avemo.parquet_io import ParquetSink, read_provenance, read_table, write_table
from avemo.progress import Progress
from avemo.provenance import code_version, provenance
from tasks.clip import (
    AUDIO_CODE,
    FACE_FEATURES_CODE,
    ClipFeatures,
    ClipSource,
    StageFailure,
    assemble,
    face_models,
    run_audio,
    run_face_features,
    run_faces,
)
from tasks.probe import MediaInfo

# Our own cache (avemo.cache) decides what to recompute; Prefect's input hashing would only hash
# waveforms and tensors for nothing.
audio_task = task(run_audio, name="audio", cache_policy=NO_CACHE)
faces_task = task(run_faces, name="faces", cache_policy=NO_CACHE)
face_features_task = task(run_face_features, name="face_features", cache_policy=NO_CACHE)
assemble_task = task(assemble, name="assemble", cache_policy=NO_CACHE)

_INFO_FIELDS = [f for f in MediaInfo.__dataclass_fields__]


@dataclass(frozen=True)
class PreprocessSummary:
    clips: int
    succeeded: int
    failed: int
    segments: int
    frames: int
    cached_stages: int
    seconds: float
    out_dir: Path
    computed_clips: tuple[str, ...] = ()  # clips with at least one stage computed, not read from the cache

    def __str__(self) -> str:
        return (
            f"{self.succeeded} of {self.clips} clips succeeded, {self.failed} failed "
            f"(see {self.out_dir / 'failures.parquet'}); {self.segments} segments, {self.frames} face frames; "
            f"{self.cached_stages} clip stages reused from the cache; {self.seconds:.1f} s"
        )


def read_sources(manifest: Path) -> tuple[list[ClipSource], list[StageFailure], Path]:
    """The clips to process, and the failures already known from probing (kept, never dropped)."""
    table = read_table(manifest, schemas.MANIFEST)
    prov = read_provenance(manifest) or {}
    corpus_dir = Path(prov.get("corpus_dir", manifest.parent))
    sources, failures = [], []
    for row in table.to_pylist():
        if row["probe_error"]:
            failures.append(StageFailure(row["clip_id"], row["path"], row["sha256"], "probe", row["probe_error"]))
            continue
        info = MediaInfo(**{name: row[name] for name in _INFO_FIELDS})
        sources.append(
            ClipSource(
                clip_id=row["clip_id"],
                path=row["path"],
                file=corpus_dir / row["path"],
                sha256=row["sha256"],
                corpus=row["corpus"],
                speaker=row["speaker"],
                label=row["label"],
                corpus_label=row["corpus_label"],
                info=info,
            )
        )
    return sources, failures, corpus_dir


def _failure_table(failures: list[StageFailure]) -> pa.Table:
    return pa.table({name: [getattr(f, name) for f in failures] for name in schemas.FAILURES.names})


@flow(name="preprocess", log_prints=True)
def preprocess_flow(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """Features of every clip of ``manifest`` into ``out_dir``: clips, segments, frames, failures."""
    logger = get_run_logger()
    started = time.perf_counter()
    sources, failures, corpus_dir = read_sources(manifest)
    cache = StageCache(params.cache_dir)
    has_video = any(s.info.has_video for s in sources)
    _, embedder = face_models(params) if has_video else (None, None)
    logger.info("preprocessing %d clips (%d failed probing) from %s", len(sources), len(failures), corpus_dir)

    audio = audio_task.map(sources, unmapped(params), unmapped(cache))
    faces = faces_task.map(sources, audio, unmapped(params), unmapped(cache))
    features = face_features_task.map(sources, faces, unmapped(params), unmapped(cache))
    assembled = assemble_task.map(sources, audio, faces, features, unmapped(params))

    ff = params.faces
    sinks = {
        "clips": ParquetSink(out_dir / "clips.parquet", schemas.clips_schema(params.audio_features.linear_bins)),
        "segments": ParquetSink(
            out_dir / "segments.parquet",
            schemas.segments_schema(params.audio_features.n_mels, params.segment.frames, ff.frames_per_segment),
        ),
        "frames": ParquetSink(
            out_dir / "frames.parquet", schemas.frames_schema(ff.crop_size, embedder.dim if embedder else 0)
        ),
    }
    stage_seconds = {"audio": 0.0, "faces": 0.0, "face_features": 0.0}
    cached_stages = 0
    computed_clips: list[str] = []
    progress = Progress(len(sources), "clips", logger)
    try:
        for future in assembled:  # manifest order: deterministic output whatever finishes first
            outcome: ClipFeatures | StageFailure = future.result()
            if isinstance(outcome, StageFailure):
                failures.append(outcome)
                computed_clips.append(outcome.clip_id)  # failures are never cached: the failing stage ran
                logger.warning("%s failed at %s: %s", outcome.clip_id, outcome.stage, outcome.reason)
            else:
                sinks["clips"].write(pa.Table.from_pylist([outcome.clip]))
                sinks["segments"].write(outcome.segments)
                if outcome.frames is not None:
                    sinks["frames"].write(outcome.frames)
                for stage, seconds in outcome.seconds.items():
                    stage_seconds[stage] += seconds
                cached_stages += sum(outcome.cached.values())
                if not all(outcome.cached.values()):
                    computed_clips.append(outcome.clip["clip_id"])
            progress.advance()
        params_doc = params.model_dump(mode="json")
        source_hashes = {s.clip_id: s.sha256 for s in sources}
        extra = {
            "manifest": str(manifest),
            "corpus_dir": str(corpus_dir),
            "sources": source_hashes,
            "face_embedder": (
                {"name": embedder.name, "dim": embedder.dim, "weights_sha256": embedder.weights_sha256}
                if embedder
                else None
            ),
            "stage_seconds": stage_seconds,
            "flow_seconds": time.perf_counter() - started,
        }
        for sink in sinks.values():
            sink.commit(provenance("preprocess", params_doc, **extra))
    except BaseException:
        for sink in sinks.values():
            sink.abort()
        raise
    write_table(
        _failure_table(failures),
        out_dir / "failures.parquet",
        schemas.FAILURES,
        provenance("preprocess", params.model_dump(mode="json"), manifest=str(manifest)),
    )
    summary = PreprocessSummary(
        clips=len(sources) + sum(f.stage == "probe" for f in failures),
        succeeded=sinks["clips"].rows,
        failed=len(failures),
        segments=sinks["segments"].rows,
        frames=sinks["frames"].rows,
        cached_stages=cached_stages,
        seconds=time.perf_counter() - started,
        out_dir=out_dir,
        computed_clips=tuple(computed_clips),
    )
    logger.info("%s", summary)
    return summary


def run_preprocess(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """Run the flow on the Dask cluster at ``params.dask_address``, else here with ``params.task_runner``.

    Here, clips already run in parallel, so torch gets the cores left per worker: two workers each
    spawning a thread per core would oversubscribe the CPU and slow MTCNN several times over.
    """
    if params.dask_address:
        return _run_on_dask(manifest, out_dir, params)
    workers = 1 if params.task_runner == "sequential" else params.workers
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    configured = preprocess_flow.with_options(task_runner=ThreadPoolTaskRunner(max_workers=workers))
    return configured(manifest=manifest, out_dir=out_dir, params=params)


class DaskSetupError(RuntimeError):
    """The Dask cluster cannot preprocess this manifest: unreachable, no workers, or workers that would
    not see the same files, cache, code or Prefect API as this machine."""


# How long to wait for the scheduler to answer, and for a first worker to join it.
DASK_CONNECT_TIMEOUT_S = 20
DASK_WORKER_WAIT_S = 60


class ComputeThreads(distributed.WorkerPlugin):
    """Sets torch's and BLAS's thread counts in every worker process, workers that join later included.

    Each worker process runs its own clips, so threads beyond one per process compete for the same
    cores; and a fixed count makes the features the same as a single-process run at that count. Task
    threads that already ran torch keep their count: a changed setting needs restarted workers.
    """

    name = "avemo-compute-threads"

    def __init__(self, threads: int) -> None:
        self.threads = threads

    def setup(self, worker: distributed.Worker) -> None:
        torch.set_num_threads(self.threads)
        threadpool_limits(limits=self.threads, user_api="blas")  # kept for the life of the process


def _stage_code() -> str:
    """The digest of every module that shapes a stage result (and so its cache key)."""
    return code_version(*AUDIO_CODE, *FACE_FEATURES_CODE)


def worker_problems(
    clip_file: str, cache_marker: str, token: str, code: str, api_url: str, threads: int
) -> list[str]:
    """What would stop this Dask worker from preprocessing like this machine would.

    Runs as a task, in a task thread, where torch's thread count is the one the clips will get.
    """
    problems = []
    blas = sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
    if torch.get_num_threads() != threads or blas not in ([], [threads]):
        problems.append(
            f"computes with {torch.get_num_threads()} torch and {blas} BLAS threads, not dask_compute_threads = "
            f"{threads}: restart the workers to apply a changed setting"
        )
    if not Path(clip_file).is_file():
        problems.append(f"cannot see the clip {clip_file} (its working directory is {os.getcwd()})")
    marker = Path(cache_marker)
    try:
        shared = marker.read_text() == token
        tempfile.TemporaryFile(dir=marker.parent).close()
    except OSError as err:
        problems.append(f"cannot read and write the cache folder {marker.parent} (in {os.getcwd()}): {err}")
    else:
        if not shared:
            problems.append(f"sees another cache folder at {marker.parent}: it must be the same shared folder")
    if _stage_code() != code:
        problems.append("runs other avemo stage code than this machine: install the same commit on every worker")
    try:
        httpx.get(f"{api_url}/health", timeout=10).raise_for_status()
    except httpx.HTTPError as err:
        problems.append(
            f"cannot reach the Prefect API at {api_url} ({err}); for workers on other machines start "
            "`prefect server start --host 0.0.0.0` and set PREFECT_API_URL=http://THIS_HOST:4200/api"
        )
    return problems


def _connect(address: str, params: PreprocessParams) -> distributed.Client:
    """A client of the scheduler at ``address`` with a worker, its workers set to the compute threads."""
    try:
        client = distributed.Client(address, timeout=DASK_CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as err:
        raise DaskSetupError(
            f"no Dask scheduler answers at {address} ({err}): start one with `dask scheduler` "
            "and workers with `dask worker ADDRESS`, or set preprocess.dask_address to null"
        ) from err
    try:
        client.wait_for_workers(1, timeout=DASK_WORKER_WAIT_S)
    except TimeoutError as err:
        client.close()
        raise DaskSetupError(
            f"the Dask scheduler at {address} has no worker after {DASK_WORKER_WAIT_S} s: "
            f"start some with `dask worker {address}`"
        ) from err
    client.register_plugin(ComputeThreads(params.dask_compute_threads))
    return client


def _check_workers(client: distributed.Client, manifest: Path, params: PreprocessParams, api_url: str) -> None:
    """Fail before any task starts when a worker cannot run the flow, naming what to fix.

    Without this, a worker that sees another cache or runs other code writes results under other keys
    or computes other features, silently.
    """
    sources, _, _ = read_sources(manifest)
    if not sources:
        return
    params.cache_dir.mkdir(parents=True, exist_ok=True)
    token = uuid.uuid4().hex
    marker = params.cache_dir / f".dask-check-{token}"
    marker.write_text(token)
    check = (str(sources[0].file), str(marker), token, _stage_code(), api_url, params.dask_compute_threads)
    try:
        checks = {
            worker: client.submit(worker_problems, *check, key=f"avemo-check-{token}-{worker}", workers=[worker])
            for worker in client.scheduler_info()["workers"]
        }
        reports = {worker: future.result() for worker, future in checks.items()}
    except ModuleNotFoundError as err:
        raise DaskSetupError(f"a Dask worker cannot import avemo ({err}): install it on every worker") from err
    finally:
        marker.unlink(missing_ok=True)
    problems = [f"worker {worker} {problem}" for worker, found in reports.items() for problem in found]
    if problems:
        raise DaskSetupError(
            "the Dask workers cannot preprocess like this machine (start them in the project folder on the "
            "same shared filesystem, with the same avemo installed):\n  " + "\n  ".join(problems)
        )


def _run_on_dask(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """The flow with its clip tasks on the cluster; this process reads the manifest and writes out_dir.

    Workers report their task runs to Prefect themselves, so they need an API URL: without one set,
    Prefect would start a private temporary server in each worker. This process starts the temporary
    server instead and hands its URL to the workers (it listens on this machine only).
    """
    address = params.dask_address
    with ExitStack() as stack:
        client = stack.enter_context(_connect(address, params))
        api_url = PREFECT_API_URL.value()
        if not api_url:
            server = SubprocessASGIServer()
            server.start()
            api_url = server.api_url
            stack.enter_context(temporary_settings({PREFECT_API_URL: api_url}))
        _check_workers(client, manifest, params, api_url)
        configured = preprocess_flow.with_options(task_runner=DaskTaskRunner(address=address))
        return configured(manifest=manifest, out_dir=out_dir, params=params)
