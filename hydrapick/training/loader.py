"""Training batches made ahead of the optimiser, in worker processes when a run asks for them.

Cropping and augmenting (random scale, random preprocessing) is Python and numpy work on the CPU: about
60 crops per second on one core. That is plenty for a CPU run, whose network step is slower, but it would
leave a GPU idle most of the time. With ``loader_workers`` N the batches of the coming steps are made by
N forked processes, a bounded number of steps ahead, and handed over in step order.

Every crop is a pure function of its step's seed and its position in the global batch
(`hydrapick.training.augment.make_batch`), so the batches, and the trained weights, do not depend on how
many workers made them.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections import deque
from collections.abc import Iterator, Sequence

import torch

from .augment import Augmentation, make_batch
from .datasets import TrainingDataset
from .sampler import Step

log = logging.getLogger(__name__)

Batch = tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]  # images, centres, places to ignore

# Steps in flight per worker: enough to hide one slow batch, few enough to bound the memory held.
AHEAD_PER_WORKER = 2

# A forked worker finds the run's datasets here (inherited, never pickled).
_datasets: Sequence[TrainingDataset] = ()
_aug: Augmentation | None = None


def _batch(datasets: Sequence[TrainingDataset], aug: Augmentation, step: Step) -> Batch:
    ds = datasets[step.dataset]
    return make_batch([ds.train[i] for i in step.micrographs], aug, step.seed, step.positions)


def _make(step: Step) -> Batch:
    """`_batch` in a forked worker, on the datasets it inherited."""
    return _batch(_datasets, _aug, step)


def _start_worker() -> None:
    # One thread per worker: N workers on N cores, not N x (every core) threads fighting over them.
    torch.set_num_threads(1)


class BatchLoader:
    """Batches of `Step` s in order, made in this process (``workers`` 0) or by ``workers`` processes."""

    def __init__(self, datasets: Sequence[TrainingDataset], aug: Augmentation, workers: int = 0) -> None:
        if workers < 0:
            raise ValueError(f"loader workers must be >= 0, got {workers}")
        if workers and "fork" not in multiprocessing.get_all_start_methods():
            log.warning("this platform cannot fork: training batches are made in the main process")
            workers = 0
        self.datasets, self.aug, self.workers = datasets, aug, workers
        self._pool = None

    def batches(self, steps: Sequence[Step]) -> Iterator[Batch]:
        if self.workers == 0:
            for step in steps:
                yield _batch(self.datasets, self.aug, step)
            return
        pool = self._started()
        pending: deque = deque()
        upcoming = iter(steps)
        for step in upcoming:  # fill the window, then hand over one batch for each new step submitted
            pending.append(pool.apply_async(_make, (step,)))
            if len(pending) >= AHEAD_PER_WORKER * self.workers:
                break
        while pending:
            batch = pending.popleft().get()
            nxt = next(upcoming, None)
            if nxt is not None:
                pending.append(pool.apply_async(_make, (nxt,)))
            yield batch

    def close(self) -> None:
        if self._pool is not None:
            self._pool.terminate()
            self._pool.join()
            self._pool = None

    def _started(self):
        if self._pool is None:
            global _datasets, _aug
            _datasets, _aug = self.datasets, self.aug
            # fork: the workers inherit the datasets instead of receiving gigabytes through pipes. They
            # only crop tensors on the CPU, never touch CUDA, so forking a CUDA process is safe here.
            context = multiprocessing.get_context("fork")
            self._pool = context.Pool(self.workers, initializer=_start_worker)
        return self._pool
