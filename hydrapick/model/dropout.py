"""Dropout whose masks can come from one random stream per sample (training on several processes).

`nn.Dropout` draws the masks of a whole batch from torch's global generator, so the masks a sample gets
depend on the batch it is in: ``W`` processes with batches of ``B`` would draw other masks than one
process with a batch of ``W x B``. Inside `per_sample_dropout`, `SampleDropout` draws sample ``k``'s masks
from a generator seeded with ``seeds[k]``, each layer continuing the sample's stream, so the masks depend
only on the sample's seed. Outside it (picking, fine-tuning, evaluation) it is plain `nn.Dropout`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn


class SampleStreams:
    """One generator per sample, made on the device of the first layer that draws from them."""

    def __init__(self, seeds: Sequence[int]) -> None:
        self.seeds = [int(s) for s in seeds]
        self._generators: list[torch.Generator] | None = None

    def generators(self, device: torch.device) -> list[torch.Generator]:
        if self._generators is None:
            self._generators = [torch.Generator(device=device).manual_seed(s) for s in self.seeds]
        return self._generators


class SampleDropout(nn.Dropout):
    """`nn.Dropout`, or per-sample masks from the streams `per_sample_dropout` sets."""

    streams: SampleStreams | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.streams is None or not self.training or self.p == 0:
            return super().forward(x)
        if len(self.streams.seeds) != x.shape[0]:
            raise ValueError(f"{len(self.streams.seeds)} dropout streams for a batch of {x.shape[0]}")
        generators = self.streams.generators(x.device)
        # The rule of nn.Dropout: keep with probability 1 - p, scale what is kept by 1 / (1 - p).
        draws = torch.stack([torch.rand(x.shape[1:], generator=g, device=x.device) for g in generators])
        return x * (draws >= self.p).to(x.dtype) * (1.0 / (1.0 - self.p))


@contextmanager
def per_sample_dropout(model: nn.Module, seeds: Sequence[int]) -> Iterator[None]:
    """Within the block, the `SampleDropout` layers of ``model`` draw sample ``k``'s masks from ``seeds[k]``.

    All layers share one generator per sample, so a forward pass draws each sample's masks layer after
    layer from its own stream; the batch size and the other samples change nothing. Use one block per
    forward pass (a second pass in the same block continues the streams).
    """
    streams = SampleStreams(seeds)
    layers = [m for m in model.modules() if isinstance(m, SampleDropout)]
    for layer in layers:
        layer.streams = streams
    try:
        yield
    finally:
        for layer in layers:
            layer.streams = None
