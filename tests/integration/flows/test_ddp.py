"""Data-parallel training: ``avemo train`` under torchrun with two CPU processes (gloo) reaches the
weights one process reaches on the same data.

The run is chosen to go through every part that makes the two equal: the class weights differ
(2 anger clips to 1 sadness clip), the batches are split unevenly, the last batch leaves one
process without an item, and early stopping reads validation scores taken on rank 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch
from torch.utils.data import RandomSampler

from avemo.distributed import ShardedBatchSampler, World, rank_seed
from tasks.learning.checkpoints import load_checkpoint

AVEMO = Path(sys.executable).with_name("avemo")
# SGD, not Adam: Adam divides each step by the gradient's running size, so it would hide a gradient off by
# a constant factor. The weights differ by float rounding alone (sums in another order): 7e-9 measured.
TOLERANCE = 1e-6


@pytest.mark.parametrize("size,batch_size", [(13, 4), (9, 3), (5, 4), (4, 3)])
def test_the_processes_shares_make_up_the_single_process_batches(size: int, batch_size: int) -> None:
    def batches(world: World) -> list[list[int]]:
        generator = torch.Generator().manual_seed(7)
        return list(ShardedBatchSampler(RandomSampler(range(size), generator=generator), batch_size, world))

    single = batches(World())
    shares = [batches(World(rank, 2, rank)) for rank in range(2)]
    assert [len(s) for s in shares] == [len(single)] * 2  # every process takes part in every step
    for step, batch in enumerate(single):
        assert sorted(shares[0][step] + shares[1][step]) == sorted(batch)
    assert rank_seed(5, 0) == 5 and rank_seed(5, 1) not in (5, 6)


def _unbalanced_features(source: Path, target: Path) -> Path:
    """The sample features without one sadness clip per speaker: class weights 0.75 and 1.5."""
    target.mkdir()
    for path in source.glob("*.parquet"):
        (target / path.name).write_bytes(path.read_bytes())
    clips = pq.read_table(source / "clips.parquet")
    dropped = {}
    for clip, speaker, label in zip(*(clips[c].to_pylist() for c in ("clip_id", "speaker", "label")), strict=True):
        if label == "sadness":
            dropped.setdefault(speaker, clip)
    keep = pc.invert(pc.is_in(clips["clip_id"], value_set=pa.array(list(dropped.values()))))
    pq.write_table(clips.filter(keep), target / "clips.parquet")  # the schema metadata (provenance) stays
    return target


def _train(
    command: list[str], out: Path, params: Path, env: dict[str, str]
) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [*command, "train", "--system", "audio", "--out", str(out), "--params", str(params)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result, time.perf_counter() - started


def test_two_processes_reach_the_weights_of_one(sample_features: Path, tmp_path: Path) -> None:
    from prefect.settings import get_current_settings

    features = _unbalanced_features(sample_features, tmp_path / "features")
    params = tmp_path / "params.yaml"
    params.write_text(
        json.dumps(
            {
                # one fold: 1 training speaker (2 anger, 1 sadness clip), 1 validation, 1 test speaker;
                # batches of 2 then 1: the second leaves rank 1 without an item
                "train": {
                    "features_dir": str(features),
                    "split": {"scheme": "fixed", "shares": [0.34, 0.33, 0.33]},
                    "epochs": 3,
                    "patience": 3,
                    "batch_size": 2,
                    "device": "cpu",
                    "optimizer": "sgd",
                    "lr": 0.05,
                },
                "models": {"audio": {"audio_channels": [16, 32, 48, 48, 32]}},
            }
        )
    )
    # both runs report to this session's Prefect server, one thread per process
    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url), "OMP_NUM_THREADS": "1"}
    one, one_seconds = _train([str(AVEMO)], tmp_path / "one", params, env)
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "--no-python",
        str(AVEMO),
    ]
    two, two_seconds = _train(torchrun, tmp_path / "two", params, env)

    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == sorted(p.name for p in (tmp_path / "one").iterdir())
    assert two.stdout.count("best epoch") == one.stdout.count("best epoch") == 1  # rank 0 alone reports
    (checkpoint,) = (tmp_path / "one").glob("fold-*.pt")
    state_one, meta_one = load_checkpoint(checkpoint)
    state_two, meta_two = load_checkpoint(tmp_path / "two" / checkpoint.name)
    assert (meta_one["processes"], meta_two["processes"]) == (1, 2)
    assert json.loads((tmp_path / "two" / "train.json").read_text())["processes"] == 2

    difference = max((state_one[k] - state_two[k]).abs().max().item() for k in state_one)
    print(f"max abs weight difference {difference:.2e}; 1 process {one_seconds:.1f} s, 2 processes {two_seconds:.1f} s")
    assert state_one.keys() == state_two.keys()
    assert difference <= TOLERANCE
    assert meta_one["best_epoch"] == meta_two["best_epoch"]
    for a, b in zip(meta_one["history"], meta_two["history"], strict=True):
        assert a["val_uar"] == b["val_uar"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-5)
