"""The processes of a ``torchrun`` launch: this process's rank, and the device and process group it uses.

Only training runs on several processes; picking and fine-tuning use `hydrapick.device.resolve_device`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..device import resolve_device
from .errors import TrainingError


@dataclass(frozen=True)
class DistContext:
    """This process's place in a ``torchrun`` launch (rank 0 of 1 outside one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def distributed_context(environ: dict[str, str] | None = None) -> DistContext:
    """Read ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` as set by ``torchrun`` (defaults: one process).

    Raises
    ------
    hydrapick.training.TrainingError
        Values that are not integers, or a rank outside the world size.
    """
    env = os.environ if environ is None else environ
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise TrainingError("RANK, WORLD_SIZE and LOCAL_RANK must be integers") from None
    if world < 1 or not 0 <= rank < world:
        raise TrainingError(f"RANK {rank} is outside WORLD_SIZE {world}")
    return DistContext(rank=rank, world_size=world, local_rank=local)


def setup_device(device: str | torch.device, dist: DistContext) -> torch.device:
    """The device of this process; joins the process group of a multi-process launch."""
    if not dist.active:
        return resolve_device(device)
    want = resolve_device(device)
    if want.type == "cuda":
        want = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(want)
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if want.type == "cuda" else "gloo")
    return want


def is_main_process(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch (or not in one): the one that reports."""
    env = os.environ if environ is None else environ
    return env.get("RANK", "0") == "0"
