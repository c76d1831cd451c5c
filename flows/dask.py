"""Preprocessing on a Dask cluster: the preprocess flow's clip tasks run on the cluster's workers.

Workers must see the corpus and ``preprocess.cache_dir`` at the same paths as this machine (a shared
filesystem) and run the same avemo; every worker is checked before any clip starts, so a worker that
would compute other features or write another cache fails the run with what to fix.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from contextlib import ExitStack
from pathlib import Path

import distributed
import httpx
import torch
from prefect.server.api.server import SubprocessASGIServer
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect_dask import DaskTaskRunner
from threadpoolctl import threadpool_info, threadpool_limits

from avemo.config import PreprocessParams
from avemo.errors import AvemoError
from avemo.provenance import code_version
from flows.preprocess import PreprocessSummary, preprocess_flow
from tasks.clip import AUDIO_CODE, FACE_FEATURES_CODE, read_sources


class DaskSetupError(AvemoError):
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


def worker_problems(clip_file: str, cache_marker: str, token: str, code: str, api_url: str, threads: int) -> list[str]:
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


def run_on_dask(manifest: Path, out_dir: Path, params: PreprocessParams) -> PreprocessSummary:
    """The flow with its clip tasks on the cluster; this process reads the manifest and writes out_dir.

    Workers report their task runs to Prefect themselves, so they need an API URL: without one set,
    Prefect would start a private temporary server in each worker. This process starts the temporary
    server instead and hands its URL to the workers (it listens on this machine only).
    """
    address = params.dask_address
    assert address is not None  # run_preprocess comes here only with a dask_address
    with ExitStack() as stack:
        client = stack.enter_context(_connect(address, params))
        api_url = PREFECT_API_URL.value()
        if not api_url:
            server = SubprocessASGIServer()
            server.start()
            api_url = server.api_url
            stack.enter_context(temporary_settings({PREFECT_API_URL: api_url}))
        _check_workers(client, manifest, params, api_url)
        # Prefect stub limit: with_options takes a TaskRunner[PrefectFuture[Any]], invariant, so no concrete runner fits
        configured = preprocess_flow.with_options(task_runner=DaskTaskRunner(address=address))  # type: ignore[arg-type]
        return configured(manifest=manifest, out_dir=out_dir, params=params)
