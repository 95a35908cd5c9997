"""Exposure and detection: illumination, shot noise, detector blur (MTF) and detector blemishes.

The image is counted electrons per pixel. With intensity ``I(x)`` relative to the incident beam, the
count at a pixel is Poisson with mean ``dose * pixel_size^2 * I(x)`` (dose in e/Å^2), so over empty ice
without an energy filter the mean count is exactly ``dose * pixel_size^2``. The counts are then blurred
by the detector's (and any resampling's) modulation transfer function, which colours signal and noise
alike: a Gaussian of ``mtf_sigma_px`` and, for summed (binned) pixels, the pixel-aperture sinc.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ..config import SimulationConfig
from .scene import _plane, smooth_field


def illumination(shape: tuple[int, int], strength: float, rng: np.random.Generator) -> np.ndarray | None:
    """Uneven illumination: ``1 + strength * (plane + smooth bump)``, or None when ``strength`` is 0."""
    if strength <= 0:
        return None
    field = _plane(shape, rng) + 0.3 * smooth_field(shape, rng, 3) * rng.uniform(0.0, 1.0)
    return (1.0 + strength * field).astype(np.float32)


# Above this mean count the Poisson distribution is drawn through its normal approximation: its skew
# (1/sqrt(mean) < 0.3) is invisible in images, and it is several times faster.
EXACT_POISSON_BELOW = 12.0


def shot_noise(intensity: np.ndarray, dose_e_per_A2: float, pixel_size_A: float, rng: np.random.Generator,
               dqe: float = 1.0) -> np.ndarray:
    """Detected electrons per pixel with mean ``dose * pixel_size^2 * intensity`` (float32).

    The detector registers electrons with efficiency ``dqe`` (its DQE at zero frequency) and the counts
    are scaled back so that their mean is the dose: ``Poisson(dqe * mean) / dqe``, i.e. the noise
    variance is ``mean / dqe``. Drawn exactly where ``dqe * mean`` is below `EXACT_POISSON_BELOW`, from
    the normal approximation elsewhere.
    """
    lam = np.maximum(intensity, 0.0).astype(np.float32) * np.float32(dose_e_per_A2 * pixel_size_A**2 * dqe)
    counts = lam + np.sqrt(lam) * rng.standard_normal(lam.shape, dtype=np.float32)
    low = lam < EXACT_POISSON_BELOW
    if low.any():
        counts[low] = rng.poisson(lam[low].astype(np.float64))
    np.maximum(counts, 0.0, out=counts)
    counts *= np.float32(1.0 / dqe)
    return counts


def mtf(shape: tuple[int, int], sigma_px: float, binned: bool) -> np.ndarray:
    """Detector MTF on the rfft2 grid of ``shape`` (float32): Gaussian x optional pixel sinc."""
    fy = np.fft.fftfreq(shape[0]).astype(np.float32)[:, None]
    fx = np.fft.rfftfreq(shape[1]).astype(np.float32)[None, :]
    m = np.exp(-2.0 * math.pi**2 * sigma_px**2 * (fx**2 + fy**2))
    if binned:
        m = m * np.sinc(fx) * np.sinc(fy)
    return m.astype(np.float32)


def blur(image: np.ndarray, sigma_px: float, binned: bool) -> np.ndarray:
    """Apply the detector MTF (mean preserved)."""
    if sigma_px <= 0 and not binned:
        return image
    spec = sfft.rfft2(image, workers=2)
    spec *= mtf(image.shape, sigma_px, binned)
    return sfft.irfft2(spec, s=image.shape, workers=2).astype(np.float32)


def blemishes(image: np.ndarray, config: SimulationConfig, rng: np.random.Generator,
              mean_count: float) -> dict:
    """Smooth dark/bright spots (gain-reference defects) and hot pixels, in place; returns what was added."""
    h, w = image.shape
    info: dict = {}
    if rng.random() < config.blemish_probability:
        spots = []
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        for _ in range(int(rng.integers(1, 5))):
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            s = rng.uniform(0.01, 0.08) * max(h, w)
            amp = rng.choice([-1.0, 1.0]) * rng.uniform(0.015, 0.05)
            x0, x1 = max(0, int(x - 4 * s)), min(w, int(x + 4 * s) + 1)
            y0, y1 = max(0, int(y - 4 * s)), min(h, int(y + 4 * s) + 1)
            g = np.exp(-((xx[:, x0:x1] - x) ** 2 + (yy[y0:y1] - y) ** 2) / (2 * s * s))
            image[y0:y1, x0:x1] *= 1.0 + amp * g
            spots.append({"x_px": round(x, 1), "y_px": round(y, 1), "sigma_px": round(s, 1),
                          "amplitude": round(float(amp), 4)})
        info["spots"] = spots
    if rng.random() < config.hot_pixel_probability:
        n = int(rng.integers(1, 30))
        ys, xs = rng.integers(0, h, n), rng.integers(0, w, n)
        image[ys, xs] += mean_count * rng.uniform(2.0, 20.0, n).astype(np.float32)
        info["hot_pixels"] = n
    return info
