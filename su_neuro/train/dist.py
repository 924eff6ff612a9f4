"""Multi-process training: the rank and world size torchrun sets, and the device of a rank.

Under torchrun (``WORLD_SIZE`` > 1) every process trains on its slice of the global batch;
:func:`distributed_env` reads where this process stands; a rank trains on CUDA device
``LOCAL_RANK`` modulo the devices present, or on the CPU. Each process draws its dropout
masks from a torch random stream of its own (:func:`rank_stream`), and rank 0's checkpoints
hold every process's stream (:func:`gather_rng`), so a resumed run continues bit-exact.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import os
import sys
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from .checkpoint import _rng_state, _set_rng_state, seed_torch
from .config import TrainConfig

RANK_STREAM = 0x4A4B  # the key that sets the ranks' streams apart from the other seeded streams


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_env() -> DistInfo:
    """Rank and world size from the variables torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", str(rank)))
    except ValueError as err:
        raise RuntimeError(f"bad torch.distributed environment variable: {err}") from None
    if world < 1 or not 0 <= rank < world:
        raise RuntimeError(f"bad torch.distributed environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, local)


def _pick_device(cfg: TrainConfig, dist: DistInfo) -> torch.device:
    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise RuntimeError("device 'cuda' asked for, but no CUDA device is available")
        return torch.device("cuda", dist.local_rank % torch.cuda.device_count())
    return torch.device("cpu")


def rank_stream(seed: int, dist: DistInfo, step: int, checkpoint: dict | None, device: torch.device) -> None:
    """Give this process a torch random stream of its own, so that dropout draws other masks
    on every process. A resumed run takes up its own stream from the checkpoint, which holds
    every process's; one resumed with another number of processes (or from a checkpoint of
    an older version) seeds each stream from ``(seed, rank, step)``."""
    ranks = checkpoint.get("rng_ranks") if checkpoint is not None else None
    if ranks is not None and len(ranks) == dist.world_size:
        _set_rng_state(ranks[dist.rank])
    else:
        key = np.random.SeedSequence([seed, RANK_STREAM, dist.rank, step]).generate_state(1, np.uint64)[0]
        seed_torch(int(key), device)


def gather_rng(dist: DistInfo) -> list | None:
    """Every process's random state (for rank 0's checkpoint); None for a single process."""
    if not dist.active:
        return None
    states: list = [None] * dist.world_size
    torch.distributed.all_gather_object(states, _rng_state())
    return states


@contextlib.contextmanager
def process_group(dist: DistInfo, device: torch.device) -> Iterator[None]:
    """The default process group of a multi-process run (gloo on CPU, nccl on CUDA) for the
    block; nothing for a single process or when the caller has started one already (it is
    theirs to end).

    The group ends inside the block's exit, with the interpreter alive. Its C++ object, and
    with it gloo's worker threads, goes only with its last reference: the DDP model's reducer
    holds one, and in torch 2.13 importing ``torch._dynamo`` (DDP does) once a group exists
    adds ten that are never dropped. A worker thread that is still letting go of a finished
    collective when the interpreter finalises needs the GIL it can no longer take, and the
    process aborts ("terminate called without an active exception", exit status -6) after a
    run that saved everything. So ``torch._dynamo`` is imported before the group starts, the
    frames of an error leaving the block drop their locals (the DDP model among them; the
    traceback's lines stay), and the group is destroyed and collected here: its destructor
    joins the worker threads."""
    if not dist.active or torch.distributed.is_initialized():
        yield
        return
    importlib.import_module("torch._dynamo")  # before the group: see above

    outer = sys.exc_info()[1]  # an error the caller is handling: its frames stay theirs
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    try:
        yield
    except BaseException as err:
        seen: set[int] = set()
        while err is not None and err is not outer and id(err) not in seen:  # raised in the block
            seen.add(id(err))
            traceback.clear_frames(err.__traceback__)
            err = err.__cause__ or err.__context__
        raise
    finally:
        torch.distributed.destroy_process_group()
        gc.collect()  # the DDP model and its reducer sit in reference cycles
