"""SSD-style detection head: from body features to one (dx, dy, logit) triple per anchor.

Thesis ch. 3.1 / Fig. 3.2: blocks of (3x3 conv stride 2, ReLU, GroupNorm, dropout) doubling the channels
while halving the resolution until one output cell covers ``anchor_stride`` input pixels, then a 3x3 conv
with stride 1 to 3 outputs. With a strided stem the body is already at 1/stem_stride resolution, so the
first head blocks keep stride 1 and the total stride stays ``anchor_stride``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import ModelConfig
from .body import ResidualBlock, conv3x3
from .dropout import SampleDropout

NUM_OUTPUTS = 3  # dx, dy (offset from the anchor, in units of anchor_stride) and the particle logit
LAYERS_PER_BLOCK = 4  # conv, ReLU, GroupNorm, dropout


def head_strides(config: ModelConfig) -> tuple[int, ...]:
    """Stride of each head block: 1 for the leading blocks not needed to reach ``anchor_stride``."""
    needed = int(round(math.log2(config.anchor_stride // config.stem_stride)))
    n = len(config.head_channels)
    return (1,) * (n - needed) + (2,) * needed


def full_resolution_blocks(config: ModelConfig) -> int:
    """How many leading head blocks keep the body's resolution (stride 1)."""
    strides = head_strides(config)
    return strides.index(2) if 2 in strides else len(strides)


def prior_bias(prior_probability: float) -> float:
    """Logit bias that makes every anchor start at ``prior_probability`` (RetinaNet): -log((1-p)/p)."""
    return -math.log((1.0 - prior_probability) / prior_probability)


class Head(nn.Module):
    """One detection head. Input (N, body_channels, h, w); output (N, Ha*Wa, 3) raw [dx, dy, logit].

    ``body_tail``: the head's own copies of the body's last ``body_tail_blocks`` residual blocks (empty
    for every head but those fine-tuned with ``train_body_blocks``). A head with a tail takes the shared
    body's features from before those blocks (`hydrapick.model.HydraPicker.head_depth`) and runs its
    tail first, so training it never changes what the other heads see.
    """

    def __init__(self, config: ModelConfig, body_tail_blocks: int = 0) -> None:
        super().__init__()
        self.body_tail = nn.Sequential(*[ResidualBlock(config.body_channels, config.group_norm_groups)
                                         for _ in range(body_tail_blocks)])
        layers: list[nn.Module] = []
        c_in = config.body_channels
        for c_out, stride in zip(config.head_channels, head_strides(config), strict=True):
            layers += [conv3x3(c_in, c_out, stride=stride, bias=True), nn.ReLU(inplace=True),
                       nn.GroupNorm(config.group_norm_groups, c_out), SampleDropout(config.head_dropout)]
            c_in = c_out
        self.blocks = nn.Sequential(*layers)
        self.output = conv3x3(c_in, NUM_OUTPUTS, bias=True)
        self.prior_probability = config.prior_probability
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.blocks.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Small output weights and a low-prior logit bias: at the start every anchor says "background" with
        # probability 1 - p, so the thousands of easy negatives do not swamp the first updates. The inputs
        # are GroupNorm-ed (unit scale), so std 0.05 / sqrt(fan_in) gives outputs of about +-0.05.
        fan_in = self.output.in_channels * 9
        nn.init.normal_(self.output.weight, std=0.05 / math.sqrt(fan_in))
        with torch.no_grad():
            self.output.bias.zero_()
            self.output.bias[2] = prior_bias(self.prior_probability)

    def trunk(self, features: torch.Tensor, blocks: int) -> torch.Tensor:
        """The output of the tail and the first ``blocks`` blocks: what `forward` with
        ``start_block=blocks`` takes."""
        return self.blocks[:blocks * LAYERS_PER_BLOCK](self.body_tail(features))

    def forward(self, features: torch.Tensor, start_block: int = 0) -> torch.Tensor:
        """Raw outputs of body ``features`` (or, with ``start_block`` k, of `trunk` (features, k))."""
        if start_block == 0:
            features = self.body_tail(features)
        out = self.output(self.blocks[start_block * LAYERS_PER_BLOCK:](features))
        n = out.shape[0]
        # (N, 3, Ha, Wa) -> (N, Ha, Wa, 3) -> (N, Ha*Wa, 3): anchors in row-major order.
        return out.permute(0, 2, 3, 1).reshape(n, -1, NUM_OUTPUTS)
