"""Reading ahead: micrographs read and prepared at the model's scale in background threads, in order.

`MicrographReader` reads one micrograph and prepares it exactly as in training
(`hydrapick.preprocess.prepare`; on CUDA in pinned memory and on the reader's own stream), turning any
error into `Loaded.error`; `ordered_prefetch` runs it ahead of the network in reader threads; `batches`
groups the results into runs of equal model-scale shape for one forward pass each.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from ..io.inputs import MicrographInput
from ..preprocess import Prepared, prepare
from .results import PickError, failure_reason


@dataclass
class Loaded:
    """A micrograph read and prepared at the model's scale, or the reason it could not be."""

    item: MicrographInput
    prepared: Prepared | None = None
    pixel_size_A: float | None = None
    error: str | None = None
    scale_index: int = 0  # which of ``pick --scales`` it was prepared for


def as_input(p: str | os.PathLike | MicrographInput) -> MicrographInput:
    if isinstance(p, MicrographInput):
        return p
    text = os.fspath(p)
    return MicrographInput(path=text, name=text)


class MicrographReader:
    """Reads one micrograph once and prepares it for each particle diameter of ``diameters_A`` (one for
    plain picking, one per scale of ``pick --scales``); called in reader threads. Errors become
    `Loaded.error`, on every scale's entry."""

    def __init__(self, config: ModelConfig, device: torch.device, diameters_A: Sequence[float],
                 clip_percentile: float, pixel_size_A: float | None) -> None:
        self.config, self.device, self.diameters_A = config, device, list(diameters_A)
        self.clip_percentile, self.pixel_size_A = clip_percentile, pixel_size_A
        self.cuda = device.type == "cuda"
        self._streams = threading.local()

    def __call__(self, item: MicrographInput) -> list[Loaded]:
        from ..io import read_micrograph
        from ..io.mrc import no_pixel_size

        try:
            size = self.pixel_size_A if self.pixel_size_A is not None else item.pixel_size_A
            mic = read_micrograph(item.path, pixel_size_A=size)
            if mic.pixel_size_A is None:
                raise PickError(f"{no_pixel_size(item.path)}; give one with --apix (pixel_size_A)")
            prepare_on = self._prepare_cuda if self.cuda else self._prepare_cpu
            return [Loaded(item, prepared, mic.pixel_size_A, scale_index=k)
                    for k, prepared in enumerate(prepare_on(item, mic.data, mic.pixel_size_A))]
        except Exception as exc:  # noqa: BLE001 - one bad micrograph must not stop a run of thousands
            reason = failure_reason(item.path, exc)
            return [Loaded(item, error=reason, scale_index=k) for k in range(len(self.diameters_A))]

    def _prepare_cpu(self, item: MicrographInput, data: np.ndarray, pixel_size_A: float) -> list[Prepared]:
        # A copy: reads the memory-mapped file here, in the reader thread, into writable memory.
        data = np.array(data, dtype=np.float32)
        if not np.isfinite(data).all():
            raise PickError(f"File '{item.path}' contains NaN or infinite pixel values")
        return [prepare(data, pixel_size_A, d, self.config, clip_percentile=self.clip_percentile)
                for d in self.diameters_A]

    def _prepare_cuda(self, item: MicrographInput, data: np.ndarray, pixel_size_A: float) -> list[Prepared]:
        stream = getattr(self._streams, "stream", None)
        if stream is None:
            stream = self._streams.stream = torch.cuda.Stream(self.device)
        # One copy from the (memory-mapped) file into pinned memory, here in the reader thread; the
        # upload and the resampling run on the reader's own stream, overlapping the network.
        host = torch.empty(data.shape, dtype=torch.float32, pin_memory=True)
        np.copyto(host.numpy(), data, casting="unsafe")
        with torch.cuda.stream(stream):
            image = host.to(self.device, non_blocking=True)
            if not bool(torch.isfinite(image).all()):
                raise PickError(f"File '{item.path}' contains NaN or infinite pixel values")
            prepared = [prepare(image, pixel_size_A, d, self.config, clip_percentile=self.clip_percentile,
                                device=self.device) for d in self.diameters_A]
        stream.synchronize()
        return prepared


def ordered_prefetch(items: Sequence[Any], fn: Callable[[Any], Any], workers: int, depth: int,
                     ) -> Iterator[Any]:
    """``fn(item)`` for each item, computed ahead by ``workers`` threads, yielded in input order."""
    if not items:
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hydrapick-reader")
    pending: queue.SimpleQueue[Future] = queue.SimpleQueue()
    it = iter(items)
    try:
        for item in it:
            pending.put(pool.submit(fn, item))
            if pending.qsize() >= depth:
                break
        while not pending.empty():
            result = pending.get().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.put(pool.submit(fn, nxt))
            yield result
    finally:
        while not pending.empty():
            pending.get().cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def batches(loaded: Iterable[Loaded], batch_size: int) -> Iterator[list[Loaded]]:
    """Runs of at most ``batch_size`` prepared micrographs of equal shape, in input order.

    A micrograph that failed to load comes alone, after the micrographs before it.
    """
    pending: list[Loaded] = []
    for one in loaded:
        if one.error is not None:
            if pending:
                yield pending
            pending = []
            yield [one]
            continue
        if pending and (len(pending) >= batch_size
                        or pending[0].prepared.image.shape != one.prepared.image.shape):  # type: ignore
            yield pending
            pending = []
        pending.append(one)
    if pending:
        yield pending
