#!/usr/bin/env python
"""Score every picker on EMPIAR-10028 micrographs rendered through the preprocessing users apply first.

Users rarely pick on raw micrographs only: they low-pass, bin, denoise, stretch contrast to 8 bit or export
JPEGs from a viewer. A picker that is only good on one rendering is fragile. This script writes the real
dev micrographs through each preprocessing family below (one MRC folder per variant, pixel size in the
header, truth scaled where the pixel grid changes), then runs every picker of compare_pickers.py
(hydrapick, RELION 3.1's LoG, Topaz if its environment exists) on every variant and prints one table,
variant x picker -> AP and best F1, with the same truth, edge rule and scoring as compare_pickers.py.

Every variant is a deterministic function of the micrograph; its strength parameters are the keyword
defaults of its function and are not tuned on any split. Choose models and settings with
``--split trainvalid`` (micrographs 061-065); ``--split test`` (311-315) is for reporting only.

``--simulated`` runs the same variants on simulated micrographs of the generic model's held-out
structures instead (4hhb, 6b7n, 6msm; `hydrapick simulate`, every particle ``--diameter-px`` across, 56
by default as on EMPIAR-10028), where every particle is labelled, so a picker's false picks on denoised,
contrast-equalised background are counted as such and not confused with particles the curators missed.
The filters' strengths keep their size relative to the particle: they are applied as if the pixel were
EMPIAR-10028's for a particle of its diameter (``filter pixel = 300.2 A / particle px``).

Usage: python benchmarks/preprocess_variants.py [--split test|trainvalid] [--out DIR] [--model PATH]
                                                [--variants raw,bin2,...] [--pickers hydrapick,relion-log]
       python benchmarks/preprocess_variants.py --simulated [--n 3] [--diameter-px 56] [--out DIR] ...
"""

from __future__ import annotations

import argparse
import io as bytes_io
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from compare_pickers import (
    REAL_DATA,
    ROOT,
    STRUCTURES,
    Dataset,
    add_picker_options,
    border_A,
    check_command,
    run_pickers,
    score,
    simulated_datasets,
    summary,
    table,
)
from scipy import ndimage

import hydrapick.io as io
from hydrapick.evaluation import load_coordinates
from hydrapick.picks import Picks
from hydrapick.training.randomise import clahe8

SPLITS = {"test": ("test",), "trainvalid": ("train", "valid")}
HELD_OUT = ("4hhb.pdb", "6b7n.pdb", "6msm.pdb")  # recipes/generic/targets.txt
EMPIAR_DIAMETER_A = 300.2  # meta.json: the particle the variants' strengths (in A) were set for
SIMULATED_SEED = 7000  # not a seed of the training corpus (1001-1037) or of compare_pickers.py (5000)


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
class Variant:
    name: str
    render: Callable[[np.ndarray, float], tuple[np.ndarray, float]] | None  # None: written by a tool
    binning: int = 1  # the truth's coordinates are divided by this


VARIANTS = (
    Variant("raw", lambda image, apix: (image, apix)),
    Variant("gauss-lowpass", gaussian_lowpass),
    Variant("bin2", bin2, binning=2),
    Variant("fourier-wiener", fourier_wiener),
    Variant("nlm-clahe8", nlm_clahe),
    Variant("gauss-lcn8", gauss_lcn),
    Variant("guided", guided),
    Variant("jpeg8", jpeg8),
    Variant("topaz-denoise", None),
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


def render(variant: Variant, names: list[str], data: Path, out: Path, pixel_size_A: float,
           truth: Picks, venv: Path, filter_pixel_size_A: float | None = None,
           ) -> tuple[list[Path], float, str]:
    """Write the variant's micrographs and truth under ``out``; (micrographs, pixel size, error or '').

    ``filter_pixel_size_A`` is the pixel size the filters are told (default: the true one), so that
    strengths given in A can be kept relative to the particle; the files get the true pixel size.
    """
    told = filter_pixel_size_A or pixel_size_A
    mic_dir, truth_dir = out / "micrographs", out / "truth"
    shutil.rmtree(truth_dir, ignore_errors=True)
    sources = [data / "micrographs" / f"{n}.mrc" for n in names]
    paths = [mic_dir / f"{n}.mrc" for n in names]
    apix = pixel_size_A
    if variant.render is None:  # topaz-denoise: a tool writes the files; reuse them when present
        if not all(p.exists() for p in paths):
            error = topaz_denoise(sources, mic_dir, venv, pixel_size_A)
            if error:
                return paths, apix, error
        for p in paths:  # Topaz writes MRC without our pixel size; rewrite the header's
            io.write_micrograph(p, io.read_micrograph(p, pixel_size_A).data, pixel_size_A)
    else:
        for source, path in zip(sources, paths, strict=True):
            original = io.read_micrograph(source, pixel_size_A).data
            image, filtered_apix = variant.render(np.asarray(original), told)
            apix = filtered_apix * pixel_size_A / told  # binning changes it; the filters do not
            io.write_micrograph(path, image, apix)
    scaled = scale_truth(truth, variant.binning)
    io.write_coordinate_folder(scaled, truth_dir, "star", micrographs=names)
    return paths, apix, ""


def matrix(title: str, rows: list[tuple[str, list]]) -> str:
    """variant x picker -> AP and best F1 (the pickers' columns in the order they ran)."""
    pickers = list(dict.fromkeys(r.picker for _, results in rows for r in results))
    head = f"{'variant':<15}" + "".join(f" {p + ' AP':>14} {'F1':>5}" for p in pickers)
    lines = [f"{title}: AP and best F1 per preprocessing variant and picker", head]
    for name, results in rows:
        by_picker = {r.picker: r for r in results}
        cells = []
        for p in pickers:
            r = by_picker.get(p)
            m = r.report if r else None
            cells.append(f" {m.ap:14.3f} {m.best_f1:5.3f}" if m else f" {'-':>14} {'-':>5}")
        lines.append(f"{name:<15}" + "".join(cells))
    return "\n".join(lines)


def run_variants(label: str, names: list[str], data: Path, truth: Picks, pixel_size_A: float,
                 diameter_A: float, out: Path, chosen: list[Variant], args: argparse.Namespace,
                 filter_pixel_size_A: float | None = None) -> list[tuple[str, list]]:
    """Render and pick every chosen variant of one dataset; (variant, results) rows, also in OUT/table.txt."""
    rows = []
    for variant in chosen:
        folder = out / variant.name
        start = time.perf_counter()
        micrographs, apix, error = render(variant, names, data, folder, pixel_size_A, truth,
                                          args.topaz_venv, filter_pixel_size_A)
        if error:
            print(f"{variant.name}: skipped: {error}\n")
            continue
        print(f"{label}, {variant.name}: rendered {len(micrographs)} micrographs at {apix:g} A/px in "
              f"{time.perf_counter() - start:.1f} s", flush=True)
        if args.render_only:
            continue
        ds = Dataset(f"{label}, {variant.name}", micrographs, load_coordinates(folder / "truth").picks,
                     diameter_A, apix, folder / "truth", border_A(args, diameter_A))
        results = run_pickers(ds, folder, args)
        for r in results:
            score(r, ds)
        print(table(ds, results) + "\n", flush=True)
        for r in results:
            if r.output is not None:
                print(f"check: {check_command(ds, r)}")
        print(flush=True)
        (folder / "summary.json").write_text(json.dumps(summary(ds, results), indent=1) + "\n")
        rows.append((variant.name, results))
    if rows:
        text = matrix(label, rows)
        print(text + "\n")
        (out / "table.txt").write_text(text + "\n")
    return rows


def mean_matrix(per_dataset: list[list[tuple[str, list]]]) -> str:
    """Variant x picker -> AP averaged over the datasets that have the cell, and the mean over variants."""
    cells: dict[tuple[str, str], list[float]] = {}
    for rows in per_dataset:
        for name, results in rows:
            for r in results:
                if r.report is not None:
                    cells.setdefault((name, r.picker), []).append(r.report.ap)
    variants = list(dict.fromkeys(v for v, _ in cells))
    pickers = list(dict.fromkeys(p for _, p in cells))
    lines = ["mean AP over the simulated structures",
             f"{'variant':<15}" + "".join(f" {p:>14}" for p in pickers)]
    for v in variants:
        lines.append(f"{v:<15}" + "".join(f" {np.mean(cells[v, p]):14.3f}" if (v, p) in cells
                                          else f" {'-':>14}" for p in pickers))
    lines.append(f"{'mean':<15}" + "".join(
        f" {np.mean([np.mean(cells[v, p]) for v in variants if (v, p) in cells]):14.3f}" for p in pickers))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=sorted(SPLITS), default="test",
                        help="test (311-315, default; report only) or trainvalid (061-065; choose models "
                             "here)")
    parser.add_argument("--data", type=Path, default=REAL_DATA, help="EMPIAR-10028 folder with meta.json")
    parser.add_argument("--out", type=Path, default=ROOT / "cache" / "variants",
                        help="rendered micrographs, truth and picks go to OUT/<split>/<variant>/ "
                             "(default: cache/variants)")
    parser.add_argument("--variants", default=",".join(v.name for v in VARIANTS),
                        help="comma-separated (default: all; topaz-denoise only with the Topaz environment)")
    parser.add_argument("--render-only", action="store_true", help="write the variants, run no picker")
    sim = parser.add_argument_group("simulated held-out structures instead of EMPIAR-10028")
    sim.add_argument("--simulated", action="store_true",
                     help="simulate the held-out structures into OUT/simulated/data (kept for reruns) and "
                          "score the variants of each; results in OUT/simulated/<structure>/<variant>/")
    sim.add_argument("--structures", type=Path, nargs="+",
                     default=[STRUCTURES / name for name in HELD_OUT],
                     help="PDB/mmCIF files (default: the generic model's held-out targets)")
    sim.add_argument("--n", type=int, default=3, help="micrographs per structure (default: 3)")
    sim.add_argument("--diameter-px", type=float, default=56.0, help="particle diameter in px (default: 56)")
    sim.add_argument("--size", default="1024", help="micrograph size in px (default: 1024)")
    add_picker_options(parser)
    args = parser.parse_args(argv)

    known = {v.name: v for v in VARIANTS}
    names_chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names_chosen if v not in known]
    if unknown:
        raise SystemExit(f"--variants: unknown variant {unknown[0]!r}; choose from {', '.join(known)}")
    chosen = [known[v] for v in names_chosen]

    if args.simulated:
        missing = [s for s in args.structures if not s.exists()]
        if missing:
            raise SystemExit(f"--structures: {missing[0]} not found")
        root = args.out / "simulated"
        datasets = simulated_datasets(root / "data", args.structures, args.n, SIMULATED_SEED,
                                      args.diameter_px, args.size, [])
        per_dataset = []
        for structure, ds in zip(args.structures, datasets, strict=True):
            data = ds.micrographs[0].parent.parent
            names = [m.stem for m in ds.micrographs]
            label = f"simulated {structure.stem}"
            per_dataset.append(run_variants(label, names, data, ds.truth, ds.pixel_size_A, ds.diameter_A,
                                            root / structure.stem, chosen, args,
                                            filter_pixel_size_A=EMPIAR_DIAMETER_A / ds.box_px))
        text = mean_matrix(per_dataset)
        print(text)
        (root / "table.txt").write_text(text + "\n")
        return 0

    meta = json.loads((args.data / "meta.json").read_text())
    names = [n for part in SPLITS[args.split] for n in meta["split"][part]]
    pixel_size_A, diameter_A = float(meta["pixel_size_A"]), float(meta["diameter_A"])
    truth = Picks.concat(load_coordinates(args.data / "truth" / f"{n}.star").picks.with_micrograph(n)
                         for n in names)
    run_variants(f"EMPIAR-10028 {args.split}", names, args.data, truth, pixel_size_A, diameter_A,
                 args.out / args.split, chosen, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
