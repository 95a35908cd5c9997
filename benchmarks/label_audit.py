"""How complete is a dataset's truth? Particles every picker finds but nobody labelled.

Reads the output folder of a `compare_pickers.py` run (its summary.json: truth, pickers' outputs, edge
rule, box). In each micrograph it takes each picker's N best picks (N = the micrograph's labelled
particles) and finds the places where **every** picker put one of those picks within a quarter of the
box of each other, with no true particle within half a box: particles by the independent agreement of
differently built pickers (a blob detector, a PU-learned CNN, hydrapick), absent from the truth. It then
scores every picker against the truth as given and against the truth plus those places.

The added places are a lower bound on what the truth lacks (a particle any one picker ranks low is not
counted) and they favour no picker (each one found all of them). `--montage` draws the best-scoring
unmatched picks of one picker beside labelled ones, for a visual check.

    python benchmarks/compare_pickers.py real --split test --pickers hydrapick,relion-log,topaz \
        --out runs/compare
    python benchmarks/label_audit.py runs/compare/real --montage runs/label_audit.png
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import mrcfile
import numpy as np
from scipy.spatial import cKDTree

from hydrapick.evaluation import drop_near_edge, evaluate, load_coordinates
from hydrapick.picks import Picks, micrograph_key

AGREE = 0.25  # picks of different pickers closer than this (in boxes) mark the same place
UNMATCHED = 0.5  # a place farther than this (in boxes) from every true particle is unlabelled


def top(picks: Picks, key: str, n: int | None = None) -> Picks:
    """The ``n`` highest-scoring picks on micrograph ``key`` (all of them when ``n`` is None)."""
    return picks.for_micrograph(key).sorted_by_score()[:n]


def centres(picks: Picks) -> np.ndarray:
    return np.stack([picks.x, picks.y], axis=1).reshape(-1, 2)


def unlabelled_places(truth: Picks, pickers: dict[str, Picks], box: float) -> dict[str, np.ndarray]:
    """Per micrograph, the mean centres of places every picker's top N marks and the truth does not."""
    out = {}
    for key in dict.fromkeys(micrograph_key(m) for m in truth.micrograph):
        labelled = centres(truth.for_micrograph(key))
        n = len(labelled)
        tops = [centres(top(p, key, n)) for p in pickers.values()]
        first, others = tops[0], tops[1:]
        if len(first) == 0:
            out[key] = np.zeros((0, 2))
            continue
        far = cKDTree(labelled).query(first)[0] > UNMATCHED * box if n else np.ones(len(first), bool)
        places = []
        for centre in first[far]:
            agreeing = [centre]
            for other in others:
                if len(other) == 0:
                    break
                d, i = cKDTree(other).query(centre)
                if d >= AGREE * box:
                    break
                agreeing.append(other[i])
            else:
                places.append(np.mean(agreeing, axis=0))
        out[key] = np.array(places).reshape(-1, 2)
    return out


def with_places(truth: Picks, places: dict[str, np.ndarray]) -> Picks:
    names = {micrograph_key(m): m for m in truth.micrograph}
    added = [Picks(names[k], xy[:, 0], xy[:, 1]) for k, xy in places.items() if len(xy)]
    return Picks.concat([truth, *added])


def montage(micrographs: dict[str, Path], truth: Picks, picks: Picks, box: float, path: Path,
            count: int = 40) -> None:
    """The ``count`` best unmatched picks (top rows) and as many labelled particles (bottom rows)."""
    from PIL import Image, ImageDraw
    from scipy import ndimage

    unmatched, matched = [], []
    for key in micrographs:
        labelled = centres(truth.for_micrograph(key))
        best = top(picks, key, len(labelled))
        d = cKDTree(labelled).query(centres(best))[0]
        rows = list(zip(best.score, [key] * len(best), best.x, best.y, strict=True))
        unmatched += [r for r, far in zip(rows, d > UNMATCHED * box, strict=True) if far]
        matched += [r for r, near in zip(rows, d <= AGREE * box, strict=True) if near]
    rng = np.random.default_rng(0)
    unmatched = sorted(unmatched, reverse=True)[:count]
    matched = [matched[i] for i in rng.choice(len(matched), min(count, len(matched)), replace=False)]
    half, side = int(box * 0.85), 144
    images = {}
    tiles = []
    for score, key, x, y in unmatched + matched:
        if key not in images:
            a = ndimage.gaussian_filter(mrcfile.read(micrographs[key]).astype(float), box / 28)
            images[key] = np.pad(a, half, mode="reflect")
        crop = images[key][int(y):int(y) + 2 * half, int(x):int(x) + 2 * half]
        lo, hi = np.percentile(crop, [1, 99])
        tile = Image.fromarray((np.clip((crop - lo) / (hi - lo + 1e-9), 0, 1) * 255).astype(np.uint8))
        tile = tile.resize((side, side)).convert("RGB")
        draw = ImageDraw.Draw(tile)
        r = side * box / (4 * half)
        draw.ellipse([side / 2 - r, side / 2 - r, side / 2 + r, side / 2 + r], outline=(0, 255, 0))
        draw.text((2, 2), f"{key} {score:.2f}", fill=(255, 255, 0))
        tiles.append(tile)
    cols = 8
    sheet = Image.new("RGB", (cols * (side + 2), -(-len(tiles) // cols) * (side + 2)))
    for i, tile in enumerate(tiles):
        sheet.paste(tile, ((i % cols) * (side + 2), (i // cols) * (side + 2)))
    sheet.save(path)
    print(f"montage: {len(unmatched)} best unmatched picks, then {len(matched)} labelled ones -> {path}")


def shapes_of(micrographs: dict[str, Path]) -> dict[str, tuple[int, int]]:
    """Each micrograph's (height, width), from its header."""
    return {k: mrcfile.mmap(p).data.shape[-2:] for k, p in micrographs.items()}


def region(picks: Picks, summary: dict, shapes: dict[str, tuple[int, int]]) -> Picks:
    """``picks`` inside the region a `compare_pickers.py` run scored (its edge rule)."""
    if summary.get("border_A") is None:
        return picks
    return drop_near_edge(picks, shapes, summary["border_A"] / summary["pixel_size_A"])


def load_run(run: Path, only: str | None = None) -> tuple[dict, dict[str, Path], Picks, dict[str, Picks]]:
    """A `compare_pickers.py` run: its summary, micrographs by key, and the truth and each available
    picker's picks (``only``: comma-separated names) inside the run's scored region (its edge rule)."""
    summary = json.loads((run / "summary.json").read_text())
    micrographs = {micrograph_key(p): Path(p) for p in summary["micrographs"]}
    shapes = shapes_of(micrographs)
    truth = region(load_coordinates(summary["truth"]).picks, summary, shapes)
    pickers = {name: region(load_coordinates(entry["output"]).picks, summary, shapes)
               for name, entry in summary["pickers"].items() if entry.get("available") and entry["output"]
               and (not only or name in only.split(","))}
    return summary, micrographs, truth, pickers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a compare_pickers.py output folder holding summary.json")
    parser.add_argument("--pickers", help="comma-separated pickers of the run to use (default: all); "
                        "one picker's variants (hydrapick and hydrapick-adapt) are not independent")
    parser.add_argument("--also", action="append", default=[], metavar="NAME=PICKS",
                        help="score this picks file too (e.g. another model's candidates on the same "
                             "micrographs) against both truths; it does not take part in the audit")
    parser.add_argument("--montage", type=Path, help="PNG of one picker's best unmatched picks")
    parser.add_argument("--montage-picker", default="hydrapick")
    args = parser.parse_args(argv)

    summary, micrographs, truth, pickers = load_run(args.run, args.pickers)
    box = float(summary["box_px"])
    if len(pickers) < 2:
        raise SystemExit("the audit needs the outputs of at least two pickers")
    places = unlabelled_places(truth, pickers, box)
    added = sum(len(v) for v in places.values())
    completed = with_places(truth, places)
    print(f"{summary['dataset']}: {len(truth.x)} labelled particles in the scored region; "
          f"{added} places in every picker's top N ({', '.join(pickers)}) with no label within "
          f"{UNMATCHED} box ({', '.join(f'{k} {len(v)}' for k, v in places.items())})")
    print(f"{'picker':<16}{'AP':>7}{'best F1':>9}{'AP, completed':>15}{'best F1, completed':>20}")
    scored = dict(pickers)
    shapes = shapes_of(micrographs) if args.also else {}
    for entry in args.also:
        name, sep, path = entry.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--also takes NAME=PICKS, got {entry!r}")
        scored[name] = region(load_coordinates(path).picks, summary, shapes)
    for name, picks in scored.items():
        a = evaluate(truth, picks, box, micrographs=list(micrographs))
        b = evaluate(completed, picks, box, micrographs=list(micrographs))
        print(f"{name:<16}{a.ap:7.3f}{a.best_f1:9.3f}{b.ap:15.3f}{b.best_f1:20.3f}")
    if args.montage:
        montage(micrographs, truth, pickers[args.montage_picker], box, args.montage)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
