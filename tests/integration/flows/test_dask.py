"""Preprocessing on a real Dask cluster gives the same features as a single-process run."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from distributed import Client, LocalCluster, get_task_stream
from threadpoolctl import threadpool_limits

import flows.dask
from avemo import schemas
from avemo.config import PreprocessParams
from avemo.ffmpeg import ffmpeg_exe
from avemo.parquet_io import write_table
from avemo.provenance import provenance
from flows.dask import DaskSetupError, worker_problems
from flows.preprocess import run_preprocess
from tasks.corpora.manifest import build_manifest, manifest_table
from tasks.sample import write_sample_corpus

pytestmark = pytest.mark.usefixtures("prefect_harness")

OUTPUTS = ("clips", "segments", "frames", "failures")


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """Two talking-face clips, one with silent audio (fails on a worker), one truncated (fails probing)."""
    root = tmp_path_factory.mktemp("dask")
    corpus = root / "corpus"
    clips = write_sample_corpus(corpus, [1001], ["ANG", "SAD"], seed=0, sentences=("DFA",))
    subprocess.run(
        [
            ffmpeg_exe(),
            "-nostdin",
            "-loglevel",
            "error",
            "-y",
            "-i",
            str(clips[0]),
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=16000:cl=mono",
            "-map",
            "0:v",
            "-map",
            "1:a",
            "-shortest",
            "-c:v",
            "copy",
            str(corpus / "1002_DFA_NEU_XX.mp4"),
        ],
        check=True,
    )
    (corpus / "1002_IEO_NEU_XX.mp4").write_bytes(clips[1].read_bytes()[:2000])
    rows, _ = build_manifest(corpus, "cremad", workers=2)
    path = root / "manifest.parquet"
    write_table(manifest_table(rows), path, schemas.MANIFEST, provenance("ingest", {}, corpus_dir=str(corpus)))
    return path


def _outputs(features: Path) -> dict[str, pa.Table]:
    """Every output's rows, without the provenance metadata (it records run times and the runner)."""
    return {name: pq.read_table(features / f"{name}.parquet").replace_schema_metadata(None) for name in OUTPUTS}


def test_dask_cluster_features_equal_single_process(manifest: Path, tmp_path: Path) -> None:
    """Bit for bit, at equal thread counts: OpenBLAS and torch sum in an order that depends on the number
    of threads, so 1 thread per worker against a 2-thread process differs in the last float32 bits
    (measured: 2e-6 on log-mel values up to 22, 5e-5 px on face boxes). The comparison pins both to one
    thread: here one clip worker per core gives torch one thread each, BLAS is limited to match."""
    threads = 1
    cluster = LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None)
    try:
        with threadpool_limits(limits=threads, user_api="blas"):
            local = PreprocessParams(cache_dir=tmp_path / "local-cache", workers=os.cpu_count() or 1)
            run_preprocess(manifest, tmp_path / "local", local)
            # inside the limit: leaving it restores MKL's count, which also resets OpenMP's (torch's)
            assert torch.get_num_threads() == threads
        with Client(cluster) as client:
            client.wait_for_workers(2)
            on_dask = PreprocessParams(
                cache_dir=tmp_path / "dask-cache", dask_address=cluster.scheduler_address, dask_compute_threads=threads
            )
            with get_task_stream(client) as stream:
                summary = run_preprocess(manifest, tmp_path / "dask", on_dask)
            workers = set(client.scheduler_info()["workers"])
    finally:
        cluster.close()

    assert (summary.clips, summary.succeeded, summary.failed) == (4, 2, 2)
    stage_runs = [r for r in stream.data if not r["key"].startswith("avemo-check-")]
    assert len(stage_runs) == 3  # the chain of every probed clip ran on the cluster...
    assert {r["worker"] for r in stage_runs} == workers  # ... on both workers
    local_out, dask_out = _outputs(tmp_path / "local"), _outputs(tmp_path / "dask")
    for name in OUTPUTS:
        assert dask_out[name].schema == local_out[name].schema, name
        assert dask_out[name].equals(local_out[name]), f"{name}.parquet differs between Dask and one process"
    assert sorted(local_out["failures"]["stage"].to_pylist()) == ["probe", "segment"]
    assert local_out["frames"].num_rows > 0


def test_unreachable_scheduler_fails_with_what_to_do(manifest: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(flows.dask, "DASK_CONNECT_TIMEOUT_S", 2)  # a refused connection is retried until then
    params = PreprocessParams(cache_dir=tmp_path / "cache", dask_address="tcp://127.0.0.1:9")
    with pytest.raises(DaskSetupError, match="no Dask scheduler answers at tcp://127.0.0.1:9.*dask scheduler"):
        run_preprocess(manifest, tmp_path / "features", params)
    assert not (tmp_path / "features").exists()


def test_worker_check_names_every_difference_from_this_machine(tmp_path: Path) -> None:
    """What a worker reports when it sees another cache, no corpus, other code, no Prefect API or threads."""
    marker = tmp_path / ".dask-check"
    marker.write_text("a token the driver did not write")
    problems = worker_problems(
        str(tmp_path / "missing.mp4"),
        str(marker),
        "the driver's token",
        "other code",
        "http://127.0.0.1:9/api",
        torch.get_num_threads() + 1,
    )
    expected = ["torch and", "cannot see the clip", "another cache folder", "other avemo stage code", "Prefect API"]
    assert len(problems) == len(expected)
    for problem, words in zip(problems, expected, strict=True):
        assert words in problem
