#!/usr/bin/env python
"""Are a picker's unmatched picks junk, or particles the curated truth left out?

AP on real data counts every pick that matches no curated particle as a false positive. Curated
coordinates are often the particles kept after 2D/3D classification, not every particle in the image, so
some "false positives" are particles. This script measures how particle-like the unmatched picks are,
with a template that needs no picker and no training:

* each micrograph is low-pass filtered (Gaussian, sigma 1.5 px) and normalised;
* the template is the rotational average of the mean crop over every curated particle;
* a crop's particle-likeness is its normalised cross-correlation with the template inside 0.6 diameters
  (best over shifts of up to 3 px);
* a crop counts as particle-like when it scores above the 10th percentile of the curated particles.

For reference it also scores random background points (more than a diameter from any curated particle).
Unmatched picks are those more than half a diameter from every curated particle; they are ranked by
score, so "top 20" are the 20 most confident picks the truth does not contain.

    python benchmarks/truth_completeness.py --picks runs/compare/hydrapick.star --picks runs/compare/topaz.txt

Defaults: ../shared/data/real/empiar-10028, its `test` micrographs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree

from hydrapick.io import read_coordinates, read_micrograph
from hydrapick.picks import micrograph_key

ROOT = Path(__file__).resolve().parents[1]
HALF = 40  # crop half-side in pixels (the EMPIAR-10028 renderings: 56-px particles)


def crops(image: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crops of (2 HALF)^2 pixels centred on ``xy`` that fit in the image, and the indices kept."""
    out, kept = [], []
    for i, (x, y) in enumerate(np.rint(xy).astype(int)):
        if HALF <= x < image.shape[1] - HALF and HALF <= y < image.shape[0] - HALF:
            out.append(image[y - HALF:y + HALF, x - HALF:x + HALF])
            kept.append(i)
    return np.array(out).reshape(-1, 2 * HALF, 2 * HALF), np.array(kept, int)


class Template:
    """Rotationally averaged mean particle; `score` is the normalised cross-correlation with it."""

    def __init__(self, particles: np.ndarray, diameter_px: float) -> None:
        yy, xx = np.mgrid[-HALF:HALF, -HALF:HALF]
        radius = np.hypot(xx, yy).astype(int)
        mean = particles.mean(0)
        profile = np.bincount(radius.ravel(), mean.ravel()) / np.bincount(radius.ravel())
        self.mask = radius <= int(0.6 * diameter_px)
        ref = profile[radius][self.mask]
        self.ref = (ref - ref.mean()) / np.linalg.norm(ref - ref.mean())

    def score(self, crop: np.ndarray) -> float:
        best = -1.0
        for dy in (-3, 0, 3):
            for dx in (-3, 0, 3):
                c = np.roll(crop, (dy, dx), (0, 1))[self.mask]
                c = c - c.mean()
                best = max(best, float(c @ self.ref / (np.linalg.norm(c) + 1e-12)))
        return best


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--picks", action="append", type=Path, required=True, help="picks file (repeat)")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--split", default="test", help="meta.json split to use")
    parser.add_argument("--top", default="20,50,100", help="sizes of the top-ranked sets")
    args = parser.parse_args(argv)

    meta = json.loads((args.real / "meta.json").read_text())
    diameter_px = meta["diameter_A"] / meta["pixel_size_A"]
    images, truth = {}, {}
    for name in meta["split"][args.split]:
        image = read_micrograph(args.real / "micrographs" / f"{name}.mrc").data.astype(np.float32)
        image = gaussian_filter(image, 1.5)
        images[name] = (image - image.mean()) / image.std()
        t = read_coordinates(args.real / "truth" / f"{name}.star")
        truth[name] = np.c_[t.x, t.y]

    template = Template(np.concatenate([crops(images[n], truth[n])[0] for n in images]), diameter_px)
    curated = np.array([template.score(c) for n in images for c in crops(images[n], truth[n])[0]])
    cut = float(np.percentile(curated, 10))
    rng = np.random.default_rng(0)
    background = []
    for n, image in images.items():
        points = rng.uniform(HALF, np.array(image.shape[::-1]) - HALF, (400, 2))
        far = cKDTree(truth[n]).query(points)[0] > diameter_px
        background += [template.score(c) for c in crops(image, points[far])[0]]
    background = np.array(background)

    print(f"{args.real.name} ({args.split}: {len(images)} micrographs), template correlation:")
    print(f"{'set':<34}{'n':>6}{'median':>9}{'particle-like':>15}")
    print(f"{'curated particles':<34}{len(curated):>6}{np.median(curated):>9.3f}{'90%':>15}")
    print(f"{'background points':<34}{len(background):>6}{np.median(background):>9.3f}"
          f"{(background > cut).mean():>15.0%}")
    for path in args.picks:
        picks = read_coordinates(path)
        keys = np.array([micrograph_key(m) for m in picks.micrograph])
        rows = []
        for n, image in images.items():
            sel = keys == micrograph_key(n)
            xy, scores = np.c_[picks.x[sel], picks.y[sel]], np.asarray(picks.score)[sel]
            if not len(xy):
                continue
            unmatched = cKDTree(truth[n]).query(xy)[0] > 0.5 * diameter_px
            cs, kept = crops(image, xy[unmatched])
            rows += [(scores[unmatched][i], template.score(c)) for i, c in zip(kept, cs, strict=True)]
        rows = np.array(sorted(rows, key=lambda r: -r[0])).reshape(-1, 2)
        for top in map(int, args.top.split(",")):
            r = rows[:top]
            if len(r):
                label = f"{path.name}: top {len(r)} unmatched"
                print(f"{label:<34}{len(r):>6}{np.median(r[:, 1]):>9.3f}{(r[:, 1] > cut).mean():>15.0%}")


if __name__ == "__main__":
    main()
