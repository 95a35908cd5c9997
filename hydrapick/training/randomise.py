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
from ..preprocess import gaussian_blur, normalise


@dataclass(frozen=True)
class Randomisation:
    """How much a training crop is randomised (the defaults change nothing)."""

    scale_min: float = 1.0  # particle size in the crop / the size the picker is told
    scale_max: float = 1.0
    preprocess_probability: float = 0.0  # share of crops passed through a random preprocessing chain
    blur_max_px: float = BLUR_MAX_PX  # widest Gaussian blur of the chain's low-pass family, model px
    # Also edge-preserving denoising (a joint bilateral filter) and CLAHE among the chain's families, as
    # non-local means, Topaz-Denoise-like and 'make it visible' exports produce (off: the families of
    # stages 5-18 and their random draws, unchanged).
    denoisers: bool = False
    # Also a random tilt of the power spectrum (half the preprocessed crops): whiter or redder noise and
    # particle detail than the simulator draws, as detectors, binning and rendering make it.
    spectral_tilt: bool = False
    # Edge-preserving denoising and CLAHE as families of their own, drawn with these probabilities in
    # every chain on top of the others (where `denoisers` takes them from the blur and equalisation
    # draws instead).
    bilateral_probability: float = 0.0
    clahe_probability: float = 0.0

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


def local_contrast(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Subtract the local mean and divide by the local standard deviation (Gaussian windows of ``sigma``).

    Flattens ice gradients and evens out contrast, as local normalisation and CLAHE-like exports do.
    """
    mean = gaussian_blur(image, sigma)
    centred = image - mean
    std = gaussian_blur(centred * centred, sigma).clamp_min(1e-6).sqrt()
    return centred / (std + 0.1 * float(std.mean()))


def edge_preserving_denoise(image: torch.Tensor, sigma_px: float, range_factor: float) -> torch.Tensor:
    """Joint bilateral filter guided by a copy of the image blurred by ``sigma_px``.

    Each pixel becomes a weighted mean of its neighbours within 2 ``sigma_px``: Gaussian in distance and
    in the difference of the guide's values (range ``range_factor`` x the guide's standard deviation).
    Noise on flat ice is averaged away while a particle's edge, which the guide still shows, stays sharp;
    this is the flat, blotchy look of non-local means and learned denoisers, which a Gaussian blur does
    not give (a guide blurred less leaves single noisy pixels at its local extremes).
    """
    radius = max(1, int(math.ceil(2 * sigma_px)))
    k = 2 * radius + 1
    h, w = image.shape
    if radius >= min(h, w):
        return gaussian_blur(image, sigma_px)
    guide = gaussian_blur(image, sigma_px)
    spread = range_factor * float(guide.std()) + 1e-6

    def windows(t: torch.Tensor) -> torch.Tensor:  # (H, W) -> (k * k, H * W)
        return F.unfold(F.pad(t[None, None], (radius,) * 4, mode="reflect"), k)[0]

    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    spatial = torch.exp(-(offsets[:, None] ** 2 + offsets[None, :] ** 2) / (2 * sigma_px**2)).reshape(-1, 1)
    weights = spatial * torch.exp(-((windows(guide) - guide.reshape(1, -1)) / spread) ** 2 / 2)
    out = (weights * windows(image)).sum(0) / weights.sum(0)
    return out.reshape(h, w)


def clahe8(image8: np.ndarray, tiles: int = 8, clip_limit: float = 2.0) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a uint8 image (``tiles`` x ``tiles`` grid).

    Each tile's 256-bin histogram is clipped at ``clip_limit`` times the mean bin count and the excess is
    spread evenly over all bins (the contrast limit); its cumulative histogram is the tile's mapping. Each
    pixel is mapped by bilinear interpolation between the mappings of the four nearest tile centres, which
    avoids seams at tile borders (as in Zuiderveld's CLAHE).
    """
    h, w = image8.shape
    th, tw = -(-h // tiles), -(-w // tiles)  # tile size, rounded up so that tiles cover the image
    ty = np.minimum(np.arange(h) // th, tiles - 1)
    tx = np.minimum(np.arange(w) // tw, tiles - 1)
    tile_id = ty[:, None] * tiles + tx[None, :]
    # (tiles * tiles * 256,) -> (tiles, tiles, 256): one histogram per tile
    hist = np.bincount((tile_id * 256 + image8).ravel(), minlength=tiles * tiles * 256)
    hist = hist.reshape(tiles, tiles, 256).astype(np.float64)
    limit = clip_limit * hist.sum(axis=2, keepdims=True) / 256
    excess = np.maximum(hist - limit, 0).sum(axis=2, keepdims=True)
    hist = np.minimum(hist, limit) + excess / 256
    cdf = np.cumsum(hist, axis=2)
    lut = np.round(255 * (cdf - cdf[..., :1]) / np.maximum(cdf[..., -1:] - cdf[..., :1], 1e-12))
    # Fractional tile coordinates of each pixel centre, relative to the tile centres.
    fy = np.clip((np.arange(h) + 0.5) / th - 0.5, 0, tiles - 1)
    fx = np.clip((np.arange(w) + 0.5) / tw - 0.5, 0, tiles - 1)
    y0, x0 = fy.astype(int), fx.astype(int)
    y1, x1 = np.minimum(y0 + 1, tiles - 1), np.minimum(x0 + 1, tiles - 1)
    wy, wx = (fy - y0)[:, None], (fx - x0)[None, :]
    Y0, Y1, X0, X1 = y0[:, None], y1[:, None], x0[None, :], x1[None, :]
    top = (1 - wx) * lut[Y0, X0, image8] + wx * lut[Y0, X1, image8]
    bottom = (1 - wx) * lut[Y1, X0, image8] + wx * lut[Y1, X1, image8]
    return np.round((1 - wy) * top + wy * bottom).astype(np.uint8)


def clahe(image: torch.Tensor, tiles: int, clip_limit: float) -> torch.Tensor:
    """CLAHE of a float image: stretched to 8 bit (0.5 % clipped each side), then `clahe8`."""
    image8 = quantise(image, 256, 0.5).to(torch.uint8).numpy()
    return torch.from_numpy(clahe8(image8, tiles, clip_limit).astype(np.float32))


TILT_PIVOT = 1 / 12  # cycles per model pixel (4 cycles per 48-px particle diameter): unchanged by a tilt


def tilt_spectrum(image: torch.Tensor, exponent: float) -> torch.Tensor:
    """Multiply the power spectrum by (f / TILT_PIVOT) ** exponent; the mean is kept.

    Positive exponents whiten (more fine detail and pixel noise), negative ones redden (smoother, as
    binning or a soft detector leaves it). Frequencies below 1/64 cycles per pixel get the gain at 1/64,
    so that ice gradients are not blown up.
    """
    h, w = image.shape
    fy = torch.fft.fftfreq(h)[:, None]
    fx = torch.fft.rfftfreq(w)[None, :]
    f = torch.sqrt(fx**2 + fy**2).clamp_min(1 / 64)
    gain = (f / TILT_PIVOT) ** (exponent / 2)  # amplitude gain: half the exponent of the power's
    spectrum = torch.fft.rfft2(image.float())
    mean = spectrum[0, 0].clone()
    spectrum = spectrum * gain
    spectrum[0, 0] = mean
    return torch.fft.irfft2(spectrum, s=(h, w))


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


def random_denoise(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """`edge_preserving_denoise` at a random strength: 1-3 model px, range 0.3-1.5 guide deviations."""
    return edge_preserving_denoise(image, float(rng.uniform(1.0, 3.0)), float(rng.uniform(0.3, 1.5)))


def random_clahe(image: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """`clahe` at a random strength: 4-12 tiles a side, clip limit 1.5-4."""
    return clahe(image, int(rng.integers(4, 13)), float(rng.uniform(1.5, 4.0)))


def random_preprocess(image: torch.Tensor, rng: np.random.Generator, generator: torch.Generator,
                      blur_max_px: float = BLUR_MAX_PX, denoisers: bool = False,
                      spectral_tilt: bool = False, bilateral_probability: float = 0.0,
                      clahe_probability: float = 0.0) -> torch.Tensor:
    """One random chain of preprocessing families with random strengths; returns the normalised image.

    Families (each drawn independently): low-pass / denoising (Gaussian, 0.4 to ``blur_max_px`` model px,
    standing in for binning, low-pass filters and the smoothing of Topaz-Denoise, non-local means or
    Wiener filters), a light unsharp mask (what guided filters and some denoisers leave), local contrast
    normalisation, histogram equalisation, a gamma curve, and an 8-bit export (64-256 levels, 0-2 %
    clipped). With ``denoisers``, half the low-pass draws are an edge-preserving denoiser instead (joint
    bilateral, 1-3 model px, range 0.3-1.5 guide standard deviations) and half the equalisations CLAHE
    (4-12 tiles, clip limit 1.5-4). With ``spectral_tilt``, half the chains start with a random tilt of
    the power spectrum (`tilt_spectrum`, exponent -1.5 to 1.5). ``bilateral_probability`` and
    ``clahe_probability`` add the two as families of their own, after the low-pass and the equalisation
    families, with the same strength ranges.
    """
    out = image.float()
    if spectral_tilt and rng.random() < 0.5:
        out = tilt_spectrum(out, float(rng.uniform(-1.5, 1.5)))
    if rng.random() < 0.6:
        if denoisers and rng.random() < 0.5:
            out = random_denoise(out, rng)
        else:
            out = gaussian_blur(out, float(rng.uniform(0.4, blur_max_px)))
    if bilateral_probability > 0 and rng.random() < bilateral_probability:
        out = random_denoise(out, rng)
    if rng.random() < 0.15:
        out = out + float(rng.uniform(0.2, 1.0)) * (out - gaussian_blur(out, float(rng.uniform(1.0, 3.0))))
    if rng.random() < 0.3:
        out = local_contrast(out, float(rng.uniform(6.0, 40.0)))
    if rng.random() < 0.25:
        if denoisers and rng.random() < 0.5:
            out = random_clahe(out, rng)
        else:
            out = equalise(out)
    elif rng.random() < 0.2:
        lo = float(out.min())
        out = (out - lo + 1e-3).pow(float(rng.uniform(0.6, 1.6)))
    if clahe_probability > 0 and rng.random() < clahe_probability:
        out = random_clahe(out, rng)
    if rng.random() < 0.5:
        out = quantise(out, int(rng.choice([64, 128, 256])), float(rng.uniform(0.0, 2.0)))
    # Picking normalises every micrograph the same way; training crops must look like what it produces.
    return normalise(out)
