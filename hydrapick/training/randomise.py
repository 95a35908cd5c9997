"""Domain randomisation of training crops: random particle scale and random preprocessing.

Users pick on micrographs that were binned, low-pass filtered, denoised, contrast-equalised or exported
to 8 bits, and they know their particle's diameter to perhaps a quarter. A network trained only on raw
simulated micrographs at the exact diameter learns the raw noise's statistics and one particle size.
Each crop here is drawn at a random scale (the particle 0.75-1.35x the size the picker is told) and,
with some probability, passed through one random chain of the preprocessing families users apply, with
random strengths, before the same normalisation picking uses (`hydrapick.preprocess.normalise`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import BLUR_MAX_PX
from ..preprocess import normalise


@dataclass(frozen=True)
class Randomisation:
    """How much a training crop is randomised (the defaults change nothing)."""

    scale_min: float = 1.0  # particle size in the crop / the size the picker is told
    scale_max: float = 1.0
    preprocess_probability: float = 0.0  # share of crops passed through a random preprocessing chain
    blur_max_px: float = BLUR_MAX_PX  # widest Gaussian blur of the chain's low-pass family, model px

    @property
    def active(self) -> bool:
        return self.scale_min != 1.0 or self.scale_max != 1.0 or self.preprocess_probability > 0


def draw_scale(config: Randomisation, rng: np.random.Generator) -> float:
    """A particle scale, log-uniform in [scale_min, scale_max] (as likely 0.8x as 1.25x)."""
    if config.scale_min == config.scale_max:
        return config.scale_min
    return float(math.exp(rng.uniform(math.log(config.scale_min), math.log(config.scale_max))))


def zoom(image: torch.Tensor, centres: torch.Tensor, out_px: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Resample a square crop to ``out_px`` (anti-aliased bilinear), centres mapped pixel-centre exact.

    image : (S, S) float tensor; centres : (P, 2) (x, y) in its pixels.
    """
    size = image.shape[-1]
    if size == out_px:
        return image, centres
    # (S, S) -> (1, 1, S, S) for interpolate, and back.
    out = F.interpolate(image[None, None].float(), size=(out_px, out_px), mode="bilinear",
                        align_corners=False, antialias=True)[0, 0]
    s = out_px / size
    return out, (centres + 0.5) * s - 0.5


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-x * x / (2 * sigma * sigma))
    return k / k.sum()


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of an (H, W) image, edges reflected.

    Wide windows (sigma > 4 px) are computed on a 4x average-pooled image and upsampled: the result is
    smooth anyway, and the cost stays a few milliseconds per crop.
    """
    if sigma > 4 and min(image.shape) >= 16:
        small = F.avg_pool2d(image[None, None], 4, ceil_mode=True)[0, 0]
        blurred = gaussian_blur(small, sigma / 4)
        out = F.interpolate(blurred[None, None], size=image.shape, mode="bilinear", align_corners=False)
        return out[0, 0]
    k = _gaussian_kernel(sigma)
    r = (len(k) - 1) // 2
    h, w = image.shape
    if r >= min(h, w):
        return torch.full_like(image, float(image.mean()))
    t = image[None, None]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return t[0, 0]


def local_contrast(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Subtract the local mean and divide by the local standard deviation (Gaussian windows of ``sigma``).

    Flattens ice gradients and evens out contrast, as local normalisation and CLAHE-like exports do.
    """
    mean = gaussian_blur(image, sigma)
    centred = image - mean
    std = gaussian_blur(centred * centred, sigma).clamp_min(1e-6).sqrt()
    return centred / (std + 0.1 * float(std.mean()))


def equalise(image: torch.Tensor) -> torch.Tensor:
    """Histogram equalisation: each pixel replaced by its rank (uniform intensities, as CLAHE aims for)."""
    flat = image.reshape(-1)
    ranks = torch.empty_like(flat)
    ranks[flat.argsort()] = torch.arange(flat.numel(), dtype=flat.dtype)
    return (ranks / max(1, flat.numel() - 1)).reshape(image.shape)


def quantise(image: torch.Tensor, levels: int, clip_percent: float) -> torch.Tensor:
    """Clip at the given percentiles and quantise to ``levels`` grey levels (an 8-bit export)."""
    q = torch.quantile(image.reshape(-1)[:: max(1, image.numel() // 100_000)].float(),
                       torch.tensor([clip_percent / 100, 1 - clip_percent / 100]))
    lo, hi = float(q[0]), float(q[1])
    if hi <= lo:
        return image
    return torch.round((image.clamp(lo, hi) - lo) / (hi - lo) * (levels - 1))


def random_preprocess(image: torch.Tensor, rng: np.random.Generator, generator: torch.Generator,
                      blur_max_px: float = BLUR_MAX_PX) -> torch.Tensor:
    """One random chain of preprocessing families with random strengths; returns the normalised image.

    Families (each drawn independently): low-pass / denoising (Gaussian, 0.4 to ``blur_max_px`` model px,
    standing in for binning, low-pass filters and the smoothing of Topaz-Denoise, non-local means or
    Wiener filters), a light unsharp mask (what guided filters and some denoisers leave), local contrast
    normalisation, histogram equalisation, a gamma curve, and an 8-bit export (64-256 levels, 0-2 %
    clipped).
    """
    out = image.float()
    if rng.random() < 0.6:
        out = gaussian_blur(out, float(rng.uniform(0.4, blur_max_px)))
    if rng.random() < 0.15:
        out = out + float(rng.uniform(0.2, 1.0)) * (out - gaussian_blur(out, float(rng.uniform(1.0, 3.0))))
    if rng.random() < 0.3:
        out = local_contrast(out, float(rng.uniform(6.0, 40.0)))
    if rng.random() < 0.25:
        out = equalise(out)
    elif rng.random() < 0.2:
        lo = float(out.min())
        out = (out - lo + 1e-3).pow(float(rng.uniform(0.6, 1.6)))
    if rng.random() < 0.5:
        out = quantise(out, int(rng.choice([64, 128, 256])), float(rng.uniform(0.0, 2.0)))
    # Picking normalises every micrograph the same way; training crops must look like what it produces.
    return normalise(out)
