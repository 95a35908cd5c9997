"""The processes of a ``torchrun`` launch: this process's rank, and the device and process group it uses.

Only training runs on several processes; picking and fine-tuning use `hydrapick.device.resolve_device`.
With ``W`` processes and batches of ``B``, a step is the step of one process with a batch of ``W x B``:
the sampler gives every rank its slice of the global batch and every crop its own random stream
(`hydrapick.training.sampler`), dropout masks follow the sample (`hydrapick.model.dropout`), and the loss
is divided by the positives of the whole global batch (`loss_divisor`), so DDP's average of the ranks'
gradients is the gradient of the global batch's loss. `replica_difference` checks that the ranks agree.

A process leaves the group it joined when it exits, after success or an error alike, but before the
interpreter shuts down (`leave_process_group`, run by ``atexit``): gloo's worker threads release the
tensors of finished collectives after the caller has moved on (the last barrier keeps the collectives
before it until it is itself freed), and a thread still doing so while the interpreter shuts down cannot
take the GIL; Python ends it with ``pthread_exit`` inside a ``noexcept`` destructor and the process
aborts ("terminate called without an active exception", SIGABRT) after all its work is done. Destroying
the group while Python is alive joins those threads first. The group lives until then, so a process may
train more than once (a group cannot be joined again reliably once destroyed).
"""

from __future__ import annotations

import atexit
import gc
import importlib
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
    """The device of this process; joins the process group of a multi-process launch.

    A group it joins is left when the process exits (`leave_process_group`); one joined by the caller
    is the caller's to leave.
    """
    if not dist.active:
        return resolve_device(device)
    want = resolve_device(device)
    if want.type == "cuda":
        want = torch.device("cuda", dist.local_rank)
        torch.cuda.set_device(want)
    if not torch.distributed.is_initialized():
        # DDP imports torch._dynamo on first use; imported once the group exists, it keeps references to
        # the group that are never released, and the group (with its threads) could not be destroyed.
        importlib.import_module("torch._dynamo")
        torch.distributed.init_process_group(backend="nccl" if want.type == "cuda" else "gloo")
        atexit.register(leave_process_group)
    return want


def leave_process_group() -> None:
    """Destroy the process group, joining its communication threads (see the module docstring).

    Whatever holds the group (a `DistributedDataParallel` wrapper: `Trainer.close` drops it) must be
    gone, or the group and its threads outlive this call. No-op when no group is joined.
    """
    if torch.distributed.is_initialized():
        gc.collect()  # DDP wrappers sit in reference cycles; the group dies with its last holder
        torch.distributed.destroy_process_group()


def is_main_process(environ: dict[str, str] | None = None) -> bool:
    """Whether this process is rank 0 of a ``torchrun`` launch (or not in one): the one that reports."""
    env = os.environ if environ is None else environ
    return env.get("RANK", "0") == "0"


def loss_divisor(num_pos: torch.Tensor, dist: DistContext) -> torch.Tensor:
    """What a rank divides its batch's detection loss by, given its number of positive anchors.

    One process: ``max(1, num_pos)``. ``W`` ranks: ``max(1, positives of all ranks) / W`` — DDP averages
    the ranks' gradients, so the result is the gradient of the whole global batch's loss divided by its
    positives, as one process with the global batch computes it.
    """
    if not dist.active:
        return num_pos.clamp(min=1)
    total = num_pos.detach().clone()
    torch.distributed.all_reduce(total)
    return total.clamp(min=1).float() / dist.world_size


def replica_difference(model: torch.nn.Module, dist: DistContext) -> float:
    """The largest difference between any rank's weights (and buffers) and rank 0's; 0.0 on one process.

    DDP keeps replicas identical (the same averaged gradients, the same optimiser steps): anything else
    means the ranks trained different models. Every rank must call it.
    """
    if not dist.active:
        return 0.0
    mine = torch.cat([t.detach().reshape(-1).float() for t in model.state_dict().values()])
    first = mine.clone()
    torch.distributed.broadcast(first, 0)
    diff = (mine - first).abs().max()
    torch.distributed.all_reduce(diff, op=torch.distributed.ReduceOp.MAX)
    return float(diff)
