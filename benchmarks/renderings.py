"""Micrographs rendered through the preprocessing users apply before picking (for tolerance.py).

Users rarely pick on raw micrographs only: they low-pass, bin, denoise, stretch contrast to 8 bit or export
JPEGs from a viewer. `render` writes a dataset through one of these families (one MRC folder per
rendering, pixel size in the header, truth scaled where the pixel grid changes). Every rendering is a
deterministic function of the micrograph; its strengths are the keyword defaults of its function, set
once for EMPIAR-10028's ribosome (300.2 A) and not tuned on any split. On another set the filters are
told the pixel size that ribosome would have at the set's particle size in pixels
(``300.2 A / diameter px``), so every strength keeps its size relative to the particle.
"""

from __future__ import annotations

import io as bytes_io
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from harness import Dataset, micrograph_keys_of
from scipy import ndimage

import hydrapick.io as io
from hydrapick.evaluation import load_coordinates
from hydrapick.picks import Picks
from hydrapick.training.randomise import clahe8

REFERENCE_DIAMETER_A = 300.2  # EMPIAR-10028's ribosome: the particle the strengths (in A) were set for


# --- preprocessing families --------------------------------------------------------------------------------
# Each takes the micrograph as float32 (H, W) and its pixel size, and returns the rendered image and its
# pixel size (changed only by binning). Images are rendered as float32 or as 8-bit values stored in float32.

def _normalised(image: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation (float64), so that strengths below are in units of the noise."""
    image = image.astype(np.float64)
    return (image - image.mean()) / max(image.std(), 1e-12)


def _to_8bit(image: np.ndarray, low_pct: float = 0.5, high_pct: float = 99.5) -> np.ndarray:
    """Stretch the [low_pct, high_pct] percentiles to 0..255 and round, as viewers and exporters do."""
    lo, hi = np.percentile(image, [low_pct, high_pct])
    return np.round(np.clip((image - lo) / max(hi - lo, 1e-12), 0, 1) * 255).astype(np.uint8)


def gaussian_lowpass(image: np.ndarray, pixel_size_A: float, *, sigma_A: float = 10.0):
    """Real-space Gaussian blur with a standard deviation of ``sigma_A`` (10 A: about 1.9 px here)."""
    return ndimage.gaussian_filter(image.astype(np.float32), sigma_A / pixel_size_A), pixel_size_A


def bin2(image: np.ndarray, pixel_size_A: float):
    """2 x 2 mean binning (the pixel size doubles). Odd last rows/columns are dropped.

    Binned pixel j averages original pixels 2j and 2j + 1, so its centre is at original 2j + 0.5;
    `scale_truth` maps coordinates accordingly.
    """
    h, w = (image.shape[0] // 2) * 2, (image.shape[1] // 2) * 2
    binned = image[:h, :w].astype(np.float32).reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    return binned, pixel_size_A * 2


def fourier_wiener(image: np.ndarray, pixel_size_A: float, *, lowpass_A: float = 20.0,
                   noise_band: tuple[float, float] = (0.4, 0.5), edge: float = 0.2):
    """Wiener-like filter in Fourier space: gain max(0, 1 - N / P(k)) times a soft low-pass at ``lowpass_A``.

    P(k) is the rotationally averaged power spectrum; N is its median in ``noise_band`` (fractions of the
    sampling frequency, i.e. near Nyquist), where a micrograph is essentially noise. The low-pass has a
    raised-cosine edge from (1 - edge) to (1 + edge) times the cut-off, to avoid ringing.
    """
    x = _normalised(image)
    spectrum = np.fft.rfft2(x)
    fy = np.fft.fftfreq(x.shape[0])[:, None]
    fx = np.fft.rfftfreq(x.shape[1])[None, :]
    radius = np.sqrt(fx**2 + fy**2)  # cycles per pixel, 0.5 at Nyquist along an axis
    shells = np.minimum((radius * 2 * 100).astype(int), 100)  # 101 shells up to Nyquist, corners in the last
    power = np.abs(spectrum) ** 2
    radial = np.bincount(shells.ravel(), power.ravel()) / np.maximum(np.bincount(shells.ravel()), 1)
    centres = np.arange(len(radial)) / 200
    noise = np.median(radial[(centres >= noise_band[0]) & (centres <= noise_band[1])])
    gain = np.clip(1 - noise / np.maximum(radial, 1e-12), 0, 1)[shells]
    cutoff = pixel_size_A / lowpass_A  # cycles per pixel
    t = np.clip((radius / cutoff - (1 - edge)) / (2 * edge), 0, 1)
    gain = gain * 0.5 * (1 + np.cos(np.pi * t))
    gain[0, 0] = 1.0  # keep the mean
    return np.fft.irfft2(spectrum * gain, s=x.shape).astype(np.float32), pixel_size_A


def _nlm(x: np.ndarray, *, patch: int = 5, search_radius: int = 3, h_factor: float = 0.8) -> np.ndarray:
    """Non-local-means-like denoising, vectorised over the whole image one search offset at a time.

    For each offset d in a (2r + 1)^2 window, the patch distance D(p, d) is the mean over a ``patch``^2
    box of (x(p) - x(p + d))^2; weights exp(-max(D - 2 sigma^2, 0) / h^2) with h = h_factor * sigma (the
    scikit-image convention, where 2 sigma^2 is the expected distance between two noisy copies of the same
    patch). sigma is estimated from differences of neighbouring pixels (median absolute deviation), which
    the particles barely affect at this sampling.
    """
    d = np.diff(x, axis=1)
    sigma = np.median(np.abs(d - np.median(d))) / 0.6745 / np.sqrt(2)
    h2 = (h_factor * sigma) ** 2
    r = search_radius
    padded = np.pad(x, r, mode="reflect")
    total = np.zeros_like(x)
    weights = np.zeros_like(x)
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            shifted = padded[r + dy:r + dy + x.shape[0], r + dx:r + dx + x.shape[1]]
            distance = ndimage.uniform_filter((x - shifted) ** 2, patch, mode="reflect")
            w = np.exp(-np.maximum(distance - 2 * sigma**2, 0) / max(h2, 1e-12))
            total += w * shifted
            weights += w
    return total / weights


def nlm_clahe(image: np.ndarray, pixel_size_A: float, *, patch: int = 5, search_radius: int = 3,
              h_factor: float = 0.8, tiles: int = 8, clip_limit: float = 2.0):
    """Non-local-means-like denoising, then CLAHE to 8 bit (a common 'make it visible' pipeline)."""
    denoised = _nlm(_normalised(image), patch=patch, search_radius=search_radius, h_factor=h_factor)
    return clahe8(_to_8bit(denoised), tiles=tiles, clip_limit=clip_limit).astype(np.float32), pixel_size_A


def gauss_lcn(image: np.ndarray, pixel_size_A: float, *, blur_A: float = 5.36, window_A: float = 600.0):
    """Gaussian blur (sigma ``blur_A``), then local contrast normalisation, to 8 bit.

    Local contrast normalisation subtracts a Gaussian-weighted local mean and divides by the local
    standard deviation over a window of sigma ``window_A`` (600 A, two particle diameters here), which
    flattens ice-thickness gradients; the result is clipped at +-3 and stretched to 0..255. The wide
    window is applied in Fourier space (periodic boundary), because a real-space kernel of ~900 px is slow.
    """
    blurred = ndimage.gaussian_filter(_normalised(image), blur_A / pixel_size_A)
    s = window_A / pixel_size_A

    def wide(x: np.ndarray) -> np.ndarray:
        return np.fft.irfft2(ndimage.fourier_gaussian(np.fft.rfft2(x), s, n=x.shape[1]), s=x.shape)

    centred = blurred - wide(blurred)
    lcn = centred / np.sqrt(np.maximum(wide(centred**2), 0) + 1e-6)
    return np.round((np.clip(lcn, -3, 3) + 3) / 6 * 255).astype(np.float32), pixel_size_A


def guided(image: np.ndarray, pixel_size_A: float, *, radius_px: int = 4, eps: float = 0.1):
    """Edge-preserving smoothing with a self-guided filter (He et al. 2010; the image guides itself).

    In each (2r + 1)^2 window the output is a linear function a * I + b of the image with
    a = var / (var + eps): flat (noise-only) windows, var << eps, are averaged; windows across a strong
    edge, var >> eps, are kept. ``eps`` is in units of the normalised image's variance (1).
    """
    x = _normalised(image)
    size = 2 * radius_px + 1
    mean = ndimage.uniform_filter(x, size, mode="reflect")
    var = ndimage.uniform_filter(x * x, size, mode="reflect") - mean**2
    a = var / (var + eps)
    b = mean - a * mean
    out = (ndimage.uniform_filter(a, size, mode="reflect") * x
           + ndimage.uniform_filter(b, size, mode="reflect"))
    return out.astype(np.float32), pixel_size_A


def jpeg8(image: np.ndarray, pixel_size_A: float, *, quality: int = 75):
    """8-bit export (percentile stretch) saved as JPEG at ``quality`` and read back.

    Uses Pillow; without it, the 8-bit image is quantised further to 32 grey levels as a rough stand-in
    for JPEG's loss (the table's variant name says which was used).
    """
    image8 = _to_8bit(image)
    try:
        from PIL import Image
    except ImportError:
        return (np.round(image8 / 8.0) * 8).astype(np.float32), pixel_size_A
    buffer = bytes_io.BytesIO()
    Image.fromarray(image8, mode="L").save(buffer, format="JPEG", quality=quality)
    buffer.seek(0)
    return np.asarray(Image.open(buffer), dtype=np.float32), pixel_size_A


@dataclass(frozen=True)
class Rendering:
    name: str
    render: Callable[[np.ndarray, float], tuple[np.ndarray, float]] | None  # None: written by a tool
    binning: int = 1  # the truth's coordinates are divided by this


RENDERINGS = (
    Rendering("raw", lambda image, apix: (image, apix)),
    Rendering("gauss-lowpass", gaussian_lowpass),
    Rendering("bin2", bin2, binning=2),
    Rendering("fourier-wiener", fourier_wiener),
    Rendering("nlm-clahe8", nlm_clahe),
    Rendering("gauss-lcn8", gauss_lcn),
    Rendering("guided", guided),
    Rendering("jpeg8", jpeg8),
    Rendering("topaz-denoise", None),
)


def scale_truth(truth: Picks, binning: int) -> Picks:
    """Truth on a micrograph binned ``binning`` x: pixel j covers originals j*b .. j*b + b - 1, so an
    original centre x maps to (x - (b - 1) / 2) / b."""
    if binning == 1:
        return truth
    offset = (binning - 1) / 2
    return Picks(truth.micrograph.copy(), (truth.x - offset) / binning, (truth.y - offset) / binning,
                 truth.score.copy(), truth.diameter_px / binning)


def topaz_denoise(sources: list[Path], out_dir: Path, venv: Path, pixel_size_A: float) -> str:
    """Topaz-Denoise (its pretrained default model, ``unet``, on CPU) into ``out_dir``; an error or ''.

    Topaz 0.3.20 fails on int8 MRC input ("Input type (double) and bias type (float) should be the same"),
    as EMPIAR-10028's renderings are, so it is given float32 copies of the micrographs.
    """
    topaz = venv / "bin" / "topaz"
    if not topaz.exists():
        return f"{topaz} not found; run benchmarks/topaz_setup.sh"
    inputs = out_dir.parent / "topaz_input"
    for source in sources:
        data = io.read_micrograph(source, pixel_size_A).data
        io.write_micrograph(inputs / source.name, np.asarray(data, dtype=np.float32), pixel_size_A)
    out_dir.mkdir(parents=True, exist_ok=True)
    command = [str(topaz), "denoise", "--device", "-1", "-o", str(out_dir),
               *[str(inputs / s.name) for s in sources]]
    proc = subprocess.run(command, capture_output=True, text=True)
    shutil.rmtree(inputs, ignore_errors=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
        return f"topaz denoise failed (exit {proc.returncode}): {' | '.join(tail)}"
    missing = [p.name for p in sources if not (out_dir / p.name).exists()]
    return f"topaz denoise wrote no {missing[0]}" if missing else ""


def render(ds: Dataset, rendering: Rendering, out: Path, topaz_venv: Path) -> Dataset:
    """``ds`` written through ``rendering`` under ``out`` (micrographs/, truth/), as a new dataset.

    Raises RuntimeError when a tool's rendering (topaz-denoise) cannot be made.
    """
    told = REFERENCE_DIAMETER_A / ds.diameter_px  # the pixel size the filters are told
    mic_dir, truth_dir = out / "micrographs", out / "truth"
    paths = [mic_dir / f"{m.stem}.mrc" for m in ds.micrographs]
    apix = ds.pixel_size_A
    if rendering.render is None:  # topaz-denoise: a tool writes the files; reused when present
        if not all(p.exists() for p in paths):
            error = topaz_denoise(ds.micrographs, mic_dir, topaz_venv, ds.pixel_size_A)
            if error:
                raise RuntimeError(error)
        for p in paths:  # Topaz writes MRC without our pixel size; rewrite the header's
            io.write_micrograph(p, io.read_micrograph(p, ds.pixel_size_A).data, ds.pixel_size_A)
    else:
        for source, path in zip(ds.micrographs, paths, strict=True):
            original = io.read_micrograph(source, ds.pixel_size_A).data
            image, filtered_apix = rendering.render(np.asarray(original), told)
            apix = filtered_apix * ds.pixel_size_A / told  # binning changes it; the filters do not
            io.write_micrograph(path, image, apix)
    truth = load_coordinates(ds.truth_dir).picks
    truth = truth[np.isin(micrograph_keys_of(truth), ds.keys)]
    shutil.rmtree(truth_dir, ignore_errors=True)
    io.write_coordinate_folder(scale_truth(truth, rendering.binning), truth_dir, "star",
                               micrographs=[p.stem for p in paths])
    return Dataset(f"{ds.name} {rendering.name}", paths, truth_dir, ds.diameter_A, apix)
