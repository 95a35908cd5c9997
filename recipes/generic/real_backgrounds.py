"""Simulated particles on real backgrounds: composite micrographs for training (issue 34, item 3).

Takes the micrographs of one split of a real labelled set (``meta.json``: pixel size, diameter, split),
finds places far from every label, and adds noise-free simulated particles there: projections of a
structure (PDB files of the structures folder, except the held-out targets of targets.txt, and
procedural particles) whose largest extent is 0.7-1.0x the set's labelled diameter, at the set's pixel
size, through a weak-phase CTF of a plausible defocus. The real micrograph's own noise lies on top of
them, as it does on the real particles. Each pasted particle layer is scaled so that its band-limited
power in a particle-sized disc equals the real particles' signal power on that micrograph (label
windows minus background windows). Integer micrographs are written back in their own type, so the
composite keeps the set's rendering (8-bit, 16-bit).

Labels of a composite are the real labels, kept, plus the pasted particles. Regions far from every
label stay background, which is right only for sets whose labels are complete there.

    python recipes/generic/real_backgrounds.py ../shared/data/real/empiar-10059 cache/realbg/b10059 \
        --split train --per-micrograph 6 --seed 18
    python recipes/generic/real_backgrounds.py ../shared/data/real/empiar-10059 cache/realbg/b10059 \
        --split valid --per-micrograph 2 --seed 18

Writes OUT/micrographs/*.mrc, OUT/coordinates/*.star (RELION, real + pasted), OUT/pasted/*.star (the
pasted ones alone) and OUT/composites-<split>.json (per composite: background, structure, defocus,
scale, counts, and the check of the pasted particles' contrast and noise against the real ones).
Deterministic: one seed, one generator per composite.
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import scipy.fft as sfft
from scipy import ndimage as ndi

from hydrapick.io import read_coordinates, read_micrograph, write_coordinates, write_micrograph
from hydrapick.io.atomic import write_json
from hydrapick.picks import Picks
from hydrapick.simulation import CTFParams, ctf_2d, load_structure, procedural_structure
from hydrapick.simulation import scattering as sc
from hydrapick.simulation.projection import get_view_bank, render_views

HERE = Path(__file__).resolve().parent
STRUCTURES = HERE.parents[2] / "shared" / "data" / "structures"
PROCEDURAL_KINDS = ("globular", "multidomain", "membrane", "cyclic", "dihedral", "elongated", "flat")
# A pasted particle's largest extent, relative to the set's labelled diameter: the told diameter is a
# box round the particle, and real particles' visible extent is mostly below it.
SIZE_RANGE = (0.7, 1.0)
DEFOCUS_UM = (0.8, 2.5)
# The B-factor (Å^2) is chosen per composite from this grid: the one whose fine-to-coarse signal power
# ratio is nearest the real particles' (their frame alignment, downsampling and rendering blur them).
BFACTOR_GRID_A2 = (0.0, 100.0, 200.0, 400.0, 800.0, 1600.0)
VIEWS = 96


def held_out_targets() -> set[str]:
    """Structure stems of targets.txt (never pasted: they are the simulated zero-shot judges)."""
    names = set()
    for line in (HERE / "targets.txt").read_text().splitlines():
        for token in line.split():
            if token.endswith((".pdb", ".cif")):
                names.add(Path(token).stem.lower())
    return names


def structure_pool(diameter_A: float, rng: np.random.Generator, n_procedural: int = 8) -> list:
    """Structures whose largest extent is within `SIZE_RANGE` of ``diameter_A``: files, then procedural."""
    lo, hi = SIZE_RANGE[0] * diameter_A, SIZE_RANGE[1] * diameter_A
    skip = held_out_targets()
    pool = []
    for path in sorted(STRUCTURES.glob("*")):
        if path.stem.lower() in skip or path.suffix not in (".pdb", ".cif"):
            continue
        s = load_structure(path)
        if lo <= s.diameter_A <= hi:
            pool.append(s)
    for i in range(n_procedural):
        kind = PROCEDURAL_KINDS[i % len(PROCEDURAL_KINDS)]
        mass, target = 300.0, 0.5 * (lo + hi)
        for _ in range(6):  # extent grows as mass^(1/3): a few corrections land inside the range
            s = procedural_structure(kind, rng, mass_kDa=mass)
            if lo <= s.diameter_A <= hi:
                pool.append(s)
                break
            mass *= (target / s.diameter_A) ** 3
    return pool


def band_pass(image: np.ndarray, diameter_px: float, fine: float = 12.0, coarse: float = 3.0) -> np.ndarray:
    """Difference of Gaussians keeping a particle's scales (sigma d/``fine`` to d/``coarse``; by default
    d/12 to d/3: no ice gradient, no pixel noise)."""
    return (ndi.gaussian_filter(image, max(diameter_px / fine, 0.5))
            - ndi.gaussian_filter(image, diameter_px / coarse))


# Coarse and fine halves of a particle's scales: their signal power ratio sets the pasted B-factor.
COARSE_BAND = (6.0, 2.0)
FINE_BAND = (24.0, 6.0)


def window_power(image: np.ndarray, x: np.ndarray, y: np.ndarray, diameter_px: float) -> np.ndarray:
    """Mean square of ``image`` in a disc of the particle's diameter round each centre (edges mirrored)."""
    r = int(diameter_px / 2)
    dy, dx = np.nonzero(np.hypot(*np.mgrid[-r:r + 1, -r:r + 1]) <= r)
    padded = np.pad(image.astype(np.float32), r, mode="reflect")
    h, w = image.shape
    cy = np.clip(np.round(np.asarray(y)).astype(int), 0, h - 1)
    cx = np.clip(np.round(np.asarray(x)).astype(int), 0, w - 1)
    return (padded[cy[:, None] + dy[None], cx[:, None] + dx[None]] ** 2).mean(axis=1)


def free_places(image: np.ndarray, labels: Picks, diameter_px: float, rng: np.random.Generator,
                n_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dart-thrown centres at least one diameter from every label, from each other and from the edge,
    and off anything darker than the ice round the labelled particles. Returns x, y and the mask of every
    allowed place.

    The grey of the ice is the image low-passed (sigma d/2) with the labelled particles masked out
    (normalised convolution), so a particle's own contrast does not shift it. Places darker than its
    2nd percentile at the labels, and half a diameter round them, are left out: contamination and carbon
    scatter electrons away, so they are dark; open ice, brighter than the ice between particles, is kept.
    """
    h, w = image.shape
    mask = np.ones(image.shape, bool)
    ly = np.clip(np.round(labels.y).astype(int), 0, h - 1)
    lx = np.clip(np.round(labels.x).astype(int), 0, w - 1)
    mask[ly, lx] = False
    distance = ndi.distance_transform_edt(mask)
    allowed = distance >= diameter_px
    m = int(math.ceil(diameter_px))
    border = np.zeros(image.shape, bool)
    border[m:h - m, m:w - m] = True
    ice = (distance > diameter_px / 2).astype(np.float32)
    grey = ndi.gaussian_filter(image * ice, diameter_px / 2) / np.maximum(
        ndi.gaussian_filter(ice, diameter_px / 2), 1e-3)
    dark = grey < np.percentile(grey[ly, lx], 2)
    allowed &= border & (ndi.distance_transform_edt(~dark) > diameter_px / 2)
    cy, cx = np.nonzero(allowed)
    order = rng.permutation(len(cx))
    xs: list[float] = []
    ys: list[float] = []
    for i in order:
        if len(xs) >= n_max:
            break
        x, y = float(cx[i]) + rng.uniform(-0.5, 0.5), float(cy[i]) + rng.uniform(-0.5, 0.5)
        if all((x - a) ** 2 + (y - b) ** 2 >= diameter_px**2 for a, b in zip(xs, ys, strict=True)):
            xs.append(x)
            ys.append(y)
    return np.asarray(xs), np.asarray(ys), allowed


def particle_potential(structure, shape: tuple[int, int], x: np.ndarray, y: np.ndarray, pixel_size_A: float,
                       rng: np.random.Generator) -> np.ndarray:
    """Projected potential (V Å) of the structure at ``(x, y)``, random views and in-plane angles."""
    bank = get_view_bank(structure, pixel_size_A, pixel_size_A, VIEWS)
    potential = np.zeros(shape, np.float32)
    views = rng.integers(0, bank.n_views, len(x))
    render_views(potential, bank.level_for(pixel_size_A), views, x, y, rng.uniform(0, 2 * math.pi, len(x)),
                 pixel_size_A)
    return potential


def ctf_image(potential: np.ndarray, pixel_size_A: float, ctf: CTFParams) -> np.ndarray:
    """Noise-free image contrast of a projected potential: weak-phase CTF (protein dark at low
    frequency), arbitrary units (scaled by the caller)."""
    phase = sc.interaction_constant(ctf.voltage_kV) * potential
    spec = sfft.fft2(phase, workers=1) * ctf_2d(ctf, potential.shape, pixel_size_A)
    return (2.0 * sfft.ifft2(spec, workers=1).real).astype(np.float32)


def signal_power(image: np.ndarray, x: np.ndarray, y: np.ndarray, bx: np.ndarray, by: np.ndarray,
                 diameter_px: float, band: tuple[float, float]) -> float:
    """Band-passed power at particles (x, y) less that at background places (bx, by): medians."""
    bp = band_pass(image, diameter_px, *band)
    background = float(np.median(window_power(bp, bx, by, diameter_px))) if len(bx) else 0.0
    return float(np.median(window_power(bp, x, y, diameter_px))) - background


def radial_power(image: np.ndarray, x: np.ndarray, y: np.ndarray, box: int, n_bins: int = 8) -> np.ndarray:
    """Mean power spectrum of boxes round the centres, in ``n_bins`` radial bands up to Nyquist."""
    h, w = image.shape
    half = box // 2
    keep = (x >= half) & (y >= half) & (x < w - half) & (y < h - half)
    if not keep.any():
        return np.full(n_bins, np.nan)
    boxes = np.stack([image[int(b) - half:int(b) + half, int(a) - half:int(a) + half]
                      for a, b in zip(x[keep], y[keep], strict=True)]).astype(np.float64)
    boxes -= boxes.mean(axis=(1, 2), keepdims=True)
    power = (np.abs(np.fft.fft2(boxes * np.hanning(box)[:, None] * np.hanning(box)[None])) ** 2).mean(0)
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(box), np.fft.fftfreq(box)))
    bands = np.minimum((k / 0.5 * n_bins).astype(int), n_bins)
    return np.array([power[bands == i].mean() for i in range(n_bins)])


def composite(image: np.ndarray, labels: Picks, pixel_size_A: float, diameter_A: float, structure,
              rng: np.random.Generator, n_max: int = 60) -> tuple[np.ndarray, Picks, dict]:
    """One composite of a real micrograph: (image in its own dtype, pasted picks, record)."""
    d = diameter_A / pixel_size_A
    real = image.astype(np.float32)
    bp = band_pass(real, d)
    x, y, allowed = free_places(real, labels, d, rng, n_max)
    cy, cx = np.nonzero(allowed)
    sample = rng.choice(len(cx), size=min(2000, len(cx)), replace=False) if len(cx) else np.zeros(0, int)
    bx, by = cx[sample], cy[sample]
    defocus = float(rng.uniform(*DEFOCUS_UM)) * 1e4
    astig = float(rng.uniform(0, 500))
    ctf = CTFParams(defocus_u_A=defocus + astig, defocus_v_A=defocus - astig,
                    astigmatism_angle_deg=float(rng.uniform(0, 180)))
    potential = particle_potential(structure, real.shape, x, y, pixel_size_A, rng)
    # The real particles' fine-to-coarse signal ratio; the B-factor whose pasted ratio is nearest it.
    real_ratio = (max(signal_power(real, labels.x, labels.y, bx, by, d, FINE_BAND), 1e-12)
                  / max(signal_power(real, labels.x, labels.y, bx, by, d, COARSE_BAND), 1e-12))
    best = None
    none = np.zeros(0)
    for b in BFACTOR_GRID_A2:
        trial = ctf_image(potential, pixel_size_A, replace(ctf, bfactor_A2=b))
        ratio = (signal_power(trial, x, y, none, none, d, FINE_BAND)
                 / max(signal_power(trial, x, y, none, none, d, COARSE_BAND), 1e-30)) if len(x) else 1.0
        miss = abs(math.log(max(ratio, 1e-12) / real_ratio))
        if best is None or miss < best[0]:
            best = (miss, b, ratio, trial)
    _, bfactor, pasted_ratio, layer = best
    ctf = replace(ctf, bfactor_A2=bfactor)
    # Signal power of a real particle = power at labels - power of the background it sits on.
    p_label = float(np.median(window_power(bp, labels.x, labels.y, d)))
    p_background = float(np.median(window_power(bp, bx, by, d))) if len(bx) else p_label
    p_signal = max(p_label - p_background, 0.05 * p_background)
    p_pasted = float(np.mean(window_power(band_pass(layer, d), x, y, d))) if len(x) else 1.0
    scale = math.sqrt(p_signal / max(p_pasted, 1e-20))
    out = real + scale * layer
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = np.clip(np.round(out), info.min, info.max).astype(image.dtype)
    pasted = Picks(x=x, y=y, diameter_px=np.full(len(x), d))
    # The check: pasted windows against real ones, on the composite as written.
    bp_out = band_pass(out.astype(np.float32), d)
    box = 2 * int(d)
    ps_pasted, ps_real = radial_power(out, x, y, box), radial_power(real, labels.x, labels.y, box)
    ps_background = radial_power(real, bx[:200], by[:200], box)
    record = {
        "structure": structure.name, "structure_diameter_A": round(float(structure.diameter_A), 1),
        "defocus_A": round(defocus, 0), "bfactor_A2": ctf.bfactor_A2,
        "fine_over_coarse_signal": {"real": round(real_ratio, 4), "pasted": round(pasted_ratio, 4)},
        "n_real": len(labels), "n_pasted": len(x), "scale": scale,
        "band_power": {"real_labels": p_label, "background": p_background,
                       "pasted_composite": float(np.median(window_power(bp_out, x, y, d)))
                       if len(x) else None},
        "power_spectrum_pasted_over_real": (ps_pasted / ps_real).round(3).tolist(),
        # Signal alone (boxes minus background boxes): the shape of the particles' spectrum, not the noise's.
        "signal_spectrum_pasted_over_real": ((ps_pasted - ps_background)
                                             / (ps_real - ps_background)).round(2).tolist(),
    }
    return out, pasted, record


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("real_set", type=Path,
                        help="a folder of ../shared/data/real (meta.json, micrographs, truth)")
    parser.add_argument("out", type=Path)
    parser.add_argument("--split", default="train",
                        help="the meta.json split whose micrographs are backgrounds")
    parser.add_argument("--per-micrograph", type=int, default=6, help="composites per background")
    parser.add_argument("--max-pasted", type=int, default=60, help="pasted particles per composite, at most")
    parser.add_argument("--seed", type=int, default=18)
    args = parser.parse_args()
    if "10028" in args.real_set.name:
        parser.error("EMPIAR-10028 is the zero-shot judge: never a training background")
    meta = json.loads((args.real_set / "meta.json").read_text())
    pixel, diameter = float(meta["pixel_size_A"]), float(meta["diameter_A"])
    split_index = {"train": 0, "valid": 1, "test": 2}[args.split]
    pool = structure_pool(diameter, np.random.default_rng([args.seed, 0]))
    print(f"{len(pool)} structures {SIZE_RANGE[0]}-{SIZE_RANGE[1]}x of {diameter:g} Å: "
          + ", ".join(f"{s.name} {s.diameter_A:.0f}" for s in pool))
    records = []
    for i, name in enumerate(meta["split"][args.split]):
        mic = read_micrograph(args.real_set / "micrographs" / f"{name}.mrc")
        labels = read_coordinates(args.real_set / "truth" / f"{name}.star")
        for j in range(args.per_micrograph):
            rng = np.random.default_rng([args.seed, split_index, i, j])
            structure = pool[(i * args.per_micrograph + j) % len(pool)]
            image, pasted, record = composite(np.asarray(mic.data), labels, pixel, diameter, structure, rng,
                                              args.max_pasted)
            key = f"{name}_bg{j:02d}"
            write_micrograph(args.out / "micrographs" / f"{key}.mrc", image, pixel)
            both = Picks(x=np.r_[labels.x, pasted.x], y=np.r_[labels.y, pasted.y])
            write_coordinates(both, args.out / "coordinates" / f"{key}.star", "star")
            write_coordinates(pasted, args.out / "pasted" / f"{key}.star", "star")
            records.append({"composite": key, "background": name, **record})
            bp = record["band_power"]
            print(f"{key}: {record['structure']} ({record['structure_diameter_A']} Å), "
                  f"{record['n_pasted']} pasted beside {record['n_real']} real, defocus "
                  f"{record['defocus_A'] / 1e4:.2f} um; band power real {bp['real_labels']:.3g}, "
                  f"background {bp['background']:.3g}, pasted {bp['pasted_composite']:.3g}; "
                  f"spectrum pasted/real {record['power_spectrum_pasted_over_real']}")
    write_json(args.out / f"composites-{args.split}.json",
               {"real_set": args.real_set.name, "split": args.split, "seed": args.seed,
                "pixel_size_A": pixel, "diameter_A": diameter, "composites": records})


if __name__ == "__main__":
    main()
