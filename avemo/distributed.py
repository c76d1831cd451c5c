"""Data-parallel training under ``torchrun``: several processes (one per GPU, or several on a CPU),
each computing the gradient of its share of every batch, averaged by DistributedDataParallel.

The aim is that N processes make the updates one process would make on the same data, only faster:
every process draws the same shuffled batches of ``batch_size`` items (the global batch) and takes
every N-th item of each (:class:`ShardedBatchSampler`); ``tasks.learning.fit`` then scales each process's
loss so that the averaged gradient is the one of the whole batch's (class-weighted) mean loss.

``torchrun`` announces itself through the ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` variables; without
them (or with ``WORLD_SIZE=1``) everything here is a no-op and training runs in one process as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar, cast

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, Sampler

from avemo.device import resolve_device
from avemo.errors import AvemoError

T = TypeVar("T")


class DistributedError(AvemoError):
    """Settings that a multi-process run cannot use."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes: rank 0 of 1 when not under torchrun."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0  # the process's index on its machine: the GPU it drives

    @property
    def is_main(self) -> bool:
        """Rank 0 validates, logs and writes; the other ranks compute gradients alone."""
        return self.rank == 0


def _launched_world() -> World:
    """What torchrun's environment variables say (1 process when they are absent)."""
    return World(
        int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0"))
    )


def is_main_process() -> bool:
    """True in a plain run and on torchrun's rank 0; usable before and after the process group exists."""
    return _launched_world().is_main


def current_world() -> World:
    """The running process group's world, or one process when none is initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return World()
    return World(dist.get_rank(), dist.get_world_size(), _launched_world().local_rank)


def process_device(name: str) -> torch.device:
    """The device this process trains on: ``resolve_device(name)``, but under torchrun CUDA means
    ``cuda:LOCAL_RANK``, one GPU per process."""
    device = resolve_device(name)
    world = _launched_world()
    if world.size == 1 or device.type != "cuda":
        return device
    if device.index is not None:
        raise DistributedError(
            f"train.device is {name!r}, but under torchrun each of the {world.size} processes takes the GPU of "
            "its LOCAL_RANK; set train.device to 'auto' or 'cuda'"
        )
    return torch.device("cuda", world.local_rank)


@contextmanager
def process_group(device_name: str) -> Iterator[World]:
    """Join torchrun's process group for the block (NCCL on CUDA, gloo on the CPU); a plain run gets
    a world of one process and nothing is initialised."""
    world = _launched_world()
    if world.size == 1:
        yield world
        return
    device = process_device(device_name)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield current_world()
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of a process's own random streams (dropout, masking): ``seed`` itself on rank 0, so rank 0
    continues the single-process streams, and a derived one on the others, so no two processes draw the
    same masks for different items."""
    return seed if rank == 0 else int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])


class ShardedBatchSampler(BatchSampler):
    """The batches one process would draw from ``sampler``, each split over the processes: rank r gets
    items r, r + N, r + 2N, ... of every batch.

    Every process must build ``sampler`` with the same seed so they agree on the batches. A short last
    batch can leave a rank with an empty share (yielded as ``[]``); the rank must still take part in
    the step, contributing nothing.
    """

    def __init__(self, sampler: Sampler[int], batch_size: int, world: World) -> None:
        super().__init__(sampler, batch_size, drop_last=False)
        self.world = world

    def __iter__(self) -> Iterator[list[int]]:
        for batch in super().__iter__():
            yield batch[self.world.rank :: self.world.size]


class _Logits(nn.Module):
    """A model's logits alone. DDP must see the output tensors: it does not look inside the models'
    dataclass outputs, and with ``static_graph`` it then silently skips the first step's all-reduce."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, **inputs: Tensor) -> Tensor:
        return self.model(**inputs).logits


def data_parallel(model: nn.Module, device: torch.device) -> nn.Module:
    """A module giving ``model``'s logits, in DistributedDataParallel when several processes train.

    On CUDA, ``model``'s BatchNorm layers become SyncBatchNorm (in place; the state dict is unchanged):
    batch statistics over all processes' shares, as one process computes them. torch has no CPU
    SyncBatchNorm, and per-process statistics would make a different model (and fail on a share of
    one item), so several CPU processes refuse a model with BatchNorm.
    ``static_graph``: the models use the same parameters in every step, and some never (AVEF's fc8
    heads, which its DBN replaces); DDP learns that set in the first step instead of searching each time.
    """
    logits = _Logits(model)
    world = current_world()
    if world.size == 1:
        return logits
    if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        if device.type != "cuda":
            raise DistributedError(
                f"{type(model).__name__} has BatchNorm layers, whose statistics torch shares between processes "
                f"on CUDA only; train it on GPUs, or on the CPU in one process (without torchrun)"
            )
        logits = nn.SyncBatchNorm.convert_sync_batchnorm(logits)
    return DistributedDataParallel(
        logits, device_ids=[device.index] if device.type == "cuda" else None, static_graph=True
    )


def all_reduce_sum(values: Tensor) -> Tensor:
    """``values`` summed over the processes, in place (unchanged in a single process)."""
    if current_world().size > 1:
        dist.all_reduce(values)
    return values


def from_main(compute: Callable[[], T]) -> T:
    """``compute()`` run on rank 0 alone, its result given to every rank: decisions taken on rank 0's
    numbers (early stopping) are then the same everywhere."""
    world = current_world()
    if world.size == 1:
        return compute()
    box = [compute() if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return cast(T, box[0])  # rank 0's result now on every rank (None only if compute returned None)


def barrier() -> None:
    """Wait for every process (e.g. until rank 0 has written a checkpoint)."""
    if current_world().size > 1:
        dist.barrier()
