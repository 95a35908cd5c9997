"""The shared body: a fully convolutional ResNet variant that turns a micrograph into features.

Thesis ch. 3.1: a stem of two stacked 3x3 convolutions, then residual blocks whose "layers" are pairs of
3x3 convolutions with no non-linearity between them. A pair sees a 5x5 neighbourhood (noise in cryo-EM
micrographs needs wide spatial averaging) at 2 x 9 instead of 25 weights per channel pair. GroupNorm rather
than BatchNorm because training uses mini-batches of 4 crops.
"""

from __future__ import annotations

import torch
from torch import nn

from ..config import ModelConfig


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, bias: bool = False) -> nn.Conv2d:
    """3x3 convolution with padding 1: output pixel j is centred on input pixel ``stride * j``."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=bias)


class PairedConv(nn.Sequential):
    """Two stacked 3x3 convolutions with nothing between them: an effective 5x5 filter."""

    def __init__(self, channels: int) -> None:
        super().__init__(conv3x3(channels, channels), conv3x3(channels, channels))


class ResidualBlock(nn.Module):
    """ResNet basic block whose two layers are `PairedConv` s.

    ``x -> pair -> GN -> ReLU -> pair -> GN -> (+ x) -> ReLU``; identity shortcut (constant width).
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.pair1 = PairedConv(channels)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.pair2 = PairedConv(channels)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.norm1(self.pair1(x)))
        out = self.norm2(self.pair2(out))
        return self.relu(out + x)


def mix_styles(x: torch.Tensor, alpha: float = 0.1, eps: float = 1e-6) -> torch.Tensor:
    """Give each sample in the batch a random mix of its own and another sample's feature statistics.

    Each channel's mean and standard deviation over the image (a crop's "style": contrast, noise level,
    texture) are replaced by ``lam`` x its own + (1 - ``lam``) x those of a randomly paired sample, ``lam``
    ~ Beta(``alpha``, ``alpha``) per sample; the normalised content is kept (MixStyle: Zhou et al., ICLR
    2021). Training sees styles between the simulated conditions, so the network leans less on any one.
    Statistics are taken without gradient, as in that method. Uses torch's global random state.
    """
    n = x.shape[0]
    if n < 2:
        return x
    flat = x.float()
    mu = flat.mean(dim=(2, 3), keepdim=True).detach()
    sigma = (flat.var(dim=(2, 3), keepdim=True) + eps).sqrt().detach()
    lam = torch.distributions.Beta(alpha, alpha).sample((n, 1, 1, 1)).to(x.device)
    perm = torch.randperm(n, device=x.device)
    mu_mix = lam * mu + (1 - lam) * mu[perm]
    sigma_mix = lam * sigma + (1 - lam) * sigma[perm]
    return (((flat - mu) / sigma) * sigma_mix + mu_mix).to(x.dtype)


class Body(nn.Module):
    """Stem (two conv + GN + ReLU: the first ``stem_kernel`` wide with stride ``stem_stride``, the second
    3x3) and ``body_blocks`` blocks.

    Input (N, in_channels, H, W); output (N, body_channels, ceil(H / stem_stride), ceil(W / stem_stride)).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        c, g = config.body_channels, config.group_norm_groups
        self.stem = nn.Sequential(
            nn.Conv2d(config.in_channels, c, kernel_size=config.stem_kernel, stride=config.stem_stride,
                      padding=config.stem_kernel // 2, bias=False),
            nn.GroupNorm(g, c), nn.ReLU(inplace=True),
            conv3x3(c, c), nn.GroupNorm(g, c), nn.ReLU(inplace=True),
        )
        self.blocks = nn.Sequential(*[ResidualBlock(c, g) for _ in range(config.body_blocks)])
        # Chance per training batch of mixing feature statistics (`mix_styles`) after the stem and after
        # the first block; set by the trainer (`[train] mix_style`), never active in eval mode.
        self.mix_style = 0.0
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # Each residual branch starts at zero, so every block starts as the identity (Goyal et al. 2017):
        # training a deep stack from scratch on noisy images is markedly more stable this way.
        for block in self.blocks:
            nn.init.zeros_(block.norm2.weight)

    def forward(self, x: torch.Tensor, depth: int | None = None) -> torch.Tensor:
        """Features after the stem and the first ``depth`` blocks (None: all of them)."""
        x = self.stem(x)
        mix = self.training and self.mix_style > 0 and float(torch.rand(())) < self.mix_style
        if mix:
            x = mix_styles(x)
        for i, block in enumerate(self.blocks[:depth]):
            x = block(x)
            if mix and i == 0:
                x = mix_styles(x)
        return x

    def resume(self, x: torch.Tensor, depth: int, stop: int) -> torch.Tensor:
        """Features after ``depth`` blocks (`forward` (x, depth)) taken on through block ``stop``."""
        for block in self.blocks[depth:stop]:
            x = block(x)
        return x
