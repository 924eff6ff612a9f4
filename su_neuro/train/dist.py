"""Multi-process training: the rank and world size torchrun sets, and the device of a rank.

Under torchrun (``WORLD_SIZE`` > 1) every process trains on its slice of the global batch;
:func:`distributed_env` reads where this process stands; a rank trains on CUDA device
``LOCAL_RANK`` modulo the devices present, or on the CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from .config import TrainConfig


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
