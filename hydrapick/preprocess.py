"""Bring a micrograph to the model's scale: resample, normalise, pad with background-like noise.

Training and picking both go through `prepare`, so the network always sees images made the same way.
Coordinates follow the pixel-centre convention: pixel ``i`` covers ``[i - 0.5, i + 0.5)``, so resampling
by ``s`` maps ``x`` to ``(x + 0.5) * s - 0.5``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .config import OUTLIER_SIGMAS, PARTICLE_SIZE_RANGE, ModelConfig
from .picks import Picks


def scale_factor(pixel_size_A: float, diameter_A: float, model_config: ModelConfig) -> float:
    """Resampling factor that gives a particle of ``diameter_A`` the model's diameter in pixels.

    Raises
    ------
    ValueError
        A size that is not a positive finite number, or a particle outside `check_particle_size`'s range.
    """
    check_particle_size(diameter_A, pixel_size_A, model_config)
    return model_config.particle_diameter_px / (diameter_A / pixel_size_A)


def check_particle_size(diameter_A: float, pixel_size_A: float, model_config: ModelConfig) -> float:
    """The particle diameter in pixels, when the model can work at that size; else one line saying so.

    Particles of ``PARTICLE_SIZE_RANGE`` times the model's ``particle_diameter_px`` are accepted (8 to
    1024 px for the bundled model's 64 px). Outside that, a unit has almost surely slipped, and the
    message names the likely slip: a diameter in nm typed as Å or in pixels typed as Å (too small), or a
    pixel size in nm typed as Å (too large).

    Raises
    ------
    ValueError
    """
    for name, value, unit in (("particle diameter", diameter_A, "Å"), ("pixel size", pixel_size_A, "Å/px")):
        if not (isinstance(value, (int, float, np.floating)) and np.isfinite(value) and value > 0):
            raise ValueError(f"the {name} must be a positive finite number in {unit}, got {value}")
    diameter_px = diameter_A / pixel_size_A
    model_px = model_config.particle_diameter_px
    low, high = (model_px * f for f in PARTICLE_SIZE_RANGE)
    if low <= diameter_px <= high:
        return diameter_px
    size = (f"a particle diameter of {diameter_A:g} Å at {pixel_size_A:g} Å/px is {diameter_px:.3g} px "
            f"across; hydrapick picks particles of {low:g} to {high:g} px (the model sees them at "
            f"{model_px:g} px)")
    if diameter_px < low:
        hint = f"was the diameter given in nm? {diameter_A * 10:g} Å would be {diameter_px * 10:.3g} px"
        if pixel_size_A > 1:
            hint += (f"; or in pixels? {diameter_A:g} px would be {diameter_A * pixel_size_A:g} Å "
                     f"(--diameter takes Å)")
    else:
        hint = (f"was the pixel size given in nm? {pixel_size_A * 10:g} Å/px would make it "
                f"{diameter_px / 10:.3g} px; check --apix or the micrographs' headers")
    raise ValueError(f"{size}: {hint}")


def resample(image: np.ndarray | torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """Resample a 2D image to ``shape`` (rows, cols) with an anti-aliased bilinear filter.

    Returns a float32 tensor on the input's device (numpy input: CPU).
    """
    t = torch.as_tensor(np.asarray(image, dtype=np.float32) if isinstance(image, np.ndarray) else image)
    t = t.to(torch.float32)
    if tuple(t.shape[-2:]) == tuple(shape):
        return t
    # (H, W) -> (1, 1, H, W) for interpolate, and back.
    out = F.interpolate(t[None, None], size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0]


def _gaussian_kernel(sigma: float, device: torch.device | None = None) -> torch.Tensor:
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
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
    k = _gaussian_kernel(sigma, image.device)
    r = (len(k) - 1) // 2
    h, w = image.shape
    if r >= min(h, w):
        return torch.full_like(image, float(image.mean()))
    t = image[None, None]
    t = F.conv2d(F.pad(t, (r, r, 0, 0), mode="reflect"), k.view(1, 1, 1, -1))
    t = F.conv2d(F.pad(t, (0, 0, r, r), mode="reflect"), k.view(1, 1, -1, 1))
    return t[0, 0]


def _robust_stats(image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """A sample of at most a million pixels, its median and a robust standard deviation (0 when the
    image is flat to float rounding).

    The scale comes from the median absolute deviation, so carbon, ice crystals and hot pixels do not
    inflate it the way a plain standard deviation would; where the MAD is nil (images of few counts) the
    plain one is used.
    """
    flat = image.reshape(-1)
    sample = flat[:: max(1, flat.numel() // 1_000_000)].float()
    median = sample.median()
    mad = (sample - median).abs().median()
    std = float(mad) * 1.4826
    # Variation below this is float rounding (resampling a constant image leaves ~1e-7 of its value),
    # not signal: scaled to unit variance it would become noise that differs from one CPU to the next.
    negligible = max(1e-12, 1e-5 * abs(float(median)))
    if not np.isfinite(std) or std <= negligible:
        std = float(sample.std())
    if not np.isfinite(std) or std <= negligible:
        std = 0.0
    return sample, median, std


def outlier_bounds(image: torch.Tensor, sigmas: float = OUTLIER_SIGMAS) -> tuple[float, float] | None:
    """The range `clip_outliers` keeps: ``sigmas`` robust standard deviations either side of the median
    (None for a constant image)."""
    _, median, std = _robust_stats(image)
    if std == 0.0:
        return None
    return float(median) - sigmas * std, float(median) + sigmas * std


def clip_outliers(image: torch.Tensor, sigmas: float = OUTLIER_SIGMAS) -> tuple[torch.Tensor, bool]:
    """Clamp pixels further than ``sigmas`` robust standard deviations from the median; also whether
    the image is constant (a blank or failed micrograph, left as it is).

    Hot pixels and cosmic rays must go before resampling: resampling spreads each over its neighbours,
    where neither `normalise`'s percentile clip nor the network can tell it from the particles.
    """
    bounds = outlier_bounds(image, sigmas)
    if bounds is None:
        return image, True
    return image.clamp(*bounds), False


def normalise(image: torch.Tensor, clip_percentile: float = 0.1) -> torch.Tensor:
    """Zero median, unit robust standard deviation (`_robust_stats`), extremes clipped."""
    sample, median, std = _robust_stats(image)
    if std == 0.0:
        return torch.zeros_like(image)
    out = (image - median) / std
    if clip_percentile > 0:
        lo, hi = tail_quantiles((sample - median) / std, clip_percentile / 100)
        out = out.clamp(lo, hi)
    return out


def tail_quantiles(values: torch.Tensor, q: float) -> tuple[float, float]:
    """The ``q`` and 1 - ``q`` quantiles of ``values`` (1-D), as `torch.quantile` gives them (linear
    interpolation between order statistics), for a small ``q``.

    `torch.quantile` sorts all the values: a tenth of a second for the million-pixel sample of a 4k
    micrograph, on every micrograph picked and on every rung of the scale calibration. Only the few
    values in each tail matter, and `torch.topk` finds them in a fraction of that time.
    """
    n = values.numel()
    # The ranks and weights in the values' own precision, as torch.quantile computes them: the same bits.
    ranks = torch.tensor([q, 1.0 - q], dtype=values.dtype) * (n - 1)
    below, above = ranks.floor().long().tolist(), ranks.ceil().long().tolist()
    k = min(n, max(above[0] + 1, n - below[1]))
    low = torch.topk(values, k, largest=False).values  # ascending: low[i] is order statistic i
    high = torch.topk(values, k, largest=True).values  # descending: high[i] is order statistic n-1-i
    weights = ranks - ranks.floor()
    lo = torch.lerp(low[below[0]], low[above[0]], weights[0])
    hi = torch.lerp(high[n - 1 - below[1]], high[n - 1 - above[1]], weights[1])
    return float(lo), float(hi)


def pad_with_noise(image: torch.Tensor, shape: tuple[int, int], generator: torch.Generator | None = None,
                   ) -> torch.Tensor:
    """Pad ``image`` at the bottom/right to at least ``shape`` with Gaussian noise of its background.

    The background is estimated robustly (median, MAD) so padding looks like empty ice, not a wall.
    """
    h, w = image.shape[-2:]
    H, W = max(h, shape[0]), max(w, shape[1])
    if (H, W) == (h, w):
        return image
    flat = image.reshape(-1)
    median = flat.median()
    std = float((flat - median).abs().median()) * 1.4826 or 1.0
    noise = torch.randn((H, W), generator=generator, dtype=image.dtype).to(image.device) * std + median
    noise[:h, :w] = image
    return noise


@dataclass
class Prepared:
    """A micrograph at the model's scale and the mapping back to the original pixels."""

    image: torch.Tensor  # (H, W) float32, normalised
    scale_y: float  # model pixels per original pixel, rows
    scale_x: float  # model pixels per original pixel, columns
    original_shape: tuple[int, int]
    constant: bool = False  # every pixel one value: nothing to pick (a blank or failed micrograph)

    def to_model(self, picks: Picks) -> Picks:
        out = Picks(picks.micrograph.copy(), (picks.x + 0.5) * self.scale_x - 0.5,
                    (picks.y + 0.5) * self.scale_y - 0.5, picks.score.copy(),
                    picks.diameter_px * self.scale_x)
        return out

    def to_original(self, picks: Picks) -> Picks:
        return Picks(picks.micrograph.copy(), (picks.x + 0.5) / self.scale_x - 0.5,
                     (picks.y + 0.5) / self.scale_y - 0.5, picks.score.copy(),
                     picks.diameter_px / self.scale_x)


def prepare(image: np.ndarray | torch.Tensor, pixel_size_A: float, diameter_A: float,
            model_config: ModelConfig, clip_percentile: float = 0.1,
            device: torch.device | str | None = None, outliers_clipped: bool = False) -> Prepared:
    """Clip outliers (`clip_outliers`), resample ``image`` so the particle is
    ``model_config.particle_diameter_px`` wide, low-pass it by ``model_config.input_lowpass_px`` (when
    set), then normalise.

    Parameters
    ----------
    image : (H, W) array
        Micrograph as read, any real dtype.
    pixel_size_A : float
        Pixel size of ``image`` in Å.
    diameter_A : float
        Particle diameter in Å.
    device : optional
        Where the work is done (the GPU makes resampling of 4k micrographs nearly free).
    outliers_clipped : bool
        ``image`` is a part of a micrograph whose outliers `clip_outliers` already clipped (by the whole
        micrograph's statistics, as picking clips it): not clipped again.
    """
    if image.ndim != 2:
        raise ValueError(f"expected a 2D micrograph, got shape {tuple(image.shape)}")
    factor = scale_factor(pixel_size_A, diameter_A, model_config)
    h, w = int(image.shape[0]), int(image.shape[1])
    shape = (max(1, round(h * factor)), max(1, round(w * factor)))
    t = torch.as_tensor(np.ascontiguousarray(image, dtype=np.float32) if isinstance(image, np.ndarray)
                        else image)
    if device is not None:
        t = t.to(device)
    clipped, constant = (t, False) if outliers_clipped else clip_outliers(t)
    small = resample(clipped, shape)
    if model_config.input_lowpass_px > 0:
        small = gaussian_blur(small, model_config.input_lowpass_px)
    return Prepared(normalise(small, clip_percentile), shape[0] / h, shape[1] / w, (h, w), constant)
