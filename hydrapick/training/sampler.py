"""Which micrographs each training step uses: every mini-batch from one dataset, sharded over ranks.

Every mini-batch comes from one dataset (thesis 4.3), which keeps small datasets represented.
Randomness is a pure function of ``(seed, phase, epoch, step)`` and, for a crop and its dropout masks, of
the crop's position in the step's global batch (see `DatasetBatchSampler`). So an interrupted run resumed
from an epoch checkpoint draws exactly the batches it would have drawn, and ``W`` ranks with batches of
``B`` draw, between them, exactly the crops one process with batches of ``W x B`` draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def step_seed(seed: Sequence[int]) -> int:
    """A non-negative 63-bit torch seed from a `Step` seed tuple."""
    return int(np.random.SeedSequence(list(seed)).generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


# Tells a sample's dropout stream apart from its crop stream (both start from the step's seed).
DROPOUT_STREAM = 0xD0


@dataclass(frozen=True)
class Step:
    """One optimisation step of one rank: which dataset, which micrographs, and their random streams.

    ``seed`` is the step's, ``(seed, phase, epoch, step)``, alike on every rank; ``positions`` are this
    rank's places in the global batch. Sample ``k`` draws its crop from ``(*seed, positions[k])``
    (`hydrapick.training.augment.make_batch`) and its dropout masks from `dropout_seeds`, so what a
    sample gets depends on its place in the global batch, not on which rank holds it.
    """

    index: int
    dataset: int
    micrographs: tuple[int, ...]
    seed: tuple[int, ...]
    positions: tuple[int, ...]

    def dropout_seeds(self) -> list[int]:
        """One torch seed per sample for its dropout masks (`hydrapick.model.dropout`)."""
        return [step_seed((*self.seed, p, DROPOUT_STREAM)) for p in self.positions]


class DatasetBatchSampler:
    """Plans the mini-batches of an epoch: every batch from one dataset, sharded over ranks.

    An epoch is a fixed number of steps (not a pass over the data), so tiny and huge corpora train alike.
    Datasets are drawn in shuffled rounds that visit every dataset once (equal weights), or at random in
    proportion to their weights; micrographs uniformly within the dataset (without replacement while the
    dataset is large enough).

    For ``world_size`` ranks, a step's global batch of ``world_size * batch_size`` micrographs comes from
    one dataset, drawn from a generator that every rank seeds alike; rank ``r`` takes the ``r``-th slice
    (positions ``r * batch_size`` onwards). So all ranks train the same head at each step (no idle
    parameters under DDP), and the steps of rank ``r`` are slices of the steps of one process with
    ``batch_size * world_size``: same dataset, micrographs, seed and positions.

    Parameters
    ----------
    sizes : sequence of int
        Number of training micrographs per dataset (all > 0).
    weights : sequence of float, optional
        Relative sampling weight per dataset (default equal).
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, steps_per_epoch: int, *,
                 weights: Sequence[float] | None = None, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not sizes or min(sizes) < 1:
            raise ValueError("every dataset needs at least one training micrograph")
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError("batch_size and steps_per_epoch must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.sizes = [int(s) for s in sizes]
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        w = np.ones(len(sizes)) if weights is None else np.asarray(weights, dtype=float)
        if len(w) != len(sizes) or (w <= 0).any():
            raise ValueError("weights must be positive, one per dataset")
        self.weights = w / w.sum()
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)

    def epoch(self, epoch: int, phase: int = 0) -> list[Step]:
        """The steps of ``epoch`` in ``phase`` for this rank (a pure function of its arguments)."""
        rng = np.random.default_rng([self.seed, phase, epoch, 0x5A4D])
        n_sets = len(self.sizes)
        if np.allclose(self.weights, self.weights[0]):
            rounds = -(-self.steps_per_epoch // n_sets)
            order = np.concatenate([rng.permutation(n_sets) for _ in range(rounds)])[: self.steps_per_epoch]
        else:
            order = rng.choice(n_sets, size=self.steps_per_epoch, p=self.weights)
        total = self.batch_size * self.world_size
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        steps = []
        for i, d in enumerate(order.tolist()):
            n = self.sizes[d]
            chosen = rng.choice(n, size=total, replace=total > n)
            steps.append(Step(index=i, dataset=int(d), micrographs=tuple(int(m) for m in chosen[lo:hi]),
                              seed=(self.seed, phase, epoch, i), positions=tuple(range(lo, hi))))
        return steps
