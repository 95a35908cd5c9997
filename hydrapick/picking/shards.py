"""SLURM array shards of a pick run: which micrographs this job picks.

A SLURM array spreads thousands of micrographs over many jobs. `select_shard` cuts the ordered input list
(`hydrapick.io.inputs.gather_inputs`) into shards that together cover it exactly once, whichever job runs
which shard; `parse_shard` reads ``--shard K/N`` and `shard_from_environment` the array task's own shard.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TypeVar

from ..io.inputs import InputError

T = TypeVar("T")


def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (shard K of N, counted from 0) into ``(K, N)``.

    Raises
    ------
    InputError
        Not of the form K/N with 0 <= K < N.
    """
    parts = str(text).strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise InputError(f"shard '{text}' is not of the form K/N (e.g. 0/8)") from None
    _check_shard(index, count, f"shard '{text}'")
    return index, count


def shard_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of this SLURM array task, or None outside a job array.

    Uses ``SLURM_ARRAY_TASK_COUNT`` tasks and the task's position in the array,
    ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``, so ``--array=1-10`` and
    ``--array=0-9`` both give shards 0..9.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1")) or 1
    except ValueError:
        raise InputError("SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT are not integers") from None
    if (task - first) % step:
        raise InputError(f"SLURM_ARRAY_TASK_ID {task} is not on the array's grid "
                         f"(min {first}, step {step})")
    index = (task - first) // step
    _check_shard(index, count, f"SLURM array task {task} (shard {index} of {count})")
    return index, count


def _check_shard(index: int, count: int, what: str) -> None:
    if count < 1:
        raise InputError(f"{what}: the number of shards must be at least 1")
    if not 0 <= index < count:
        raise InputError(f"{what}: the shard index must be between 0 and {count - 1}")


def select_shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Every ``count``-th item starting at ``index``: shards 0..count-1 cover ``items`` exactly once.

    Interleaving (rather than cutting into blocks) keeps the shards' sizes within one of each other
    and spreads micrographs from the start and the end of a session over all jobs.
    """
    _check_shard(index, count, f"shard {index}/{count}")
    return list(items[index::count])
