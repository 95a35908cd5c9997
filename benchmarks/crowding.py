"""Do crowded particles score lower? Each labelled particle's score and rank, by distance to its neighbour.

Reads the output folder of a `compare_pickers.py` run (as `label_audit.py` does: same truth, same edge
rule, same box). Picks are matched to labelled particles by the evaluation's own greedy matching (IoU >
0.6 of boxes). For each labelled particle it takes the score of the pick matched to it, and that pick's
place in the picker's ranking of its micrograph, counted in labelled particles of that micrograph (0 =
the best pick, 1 = as many picks above it as the micrograph has particles; no match = infinite). Counted
so, places compare across pickers that keep different numbers of candidates. The particles are grouped
by the distance to their nearest labelled neighbour, in particle diameters: touching and overlapping
particles (below 0.9) against free ones. A picker that places crowded particles low loses recall where
best F1 is decided.

    python benchmarks/compare_pickers.py real --split test --pickers hydrapick,relion-log,topaz \
        --out runs/compare
    python benchmarks/crowding.py runs/compare/real
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from label_audit import load_run
from scipy.spatial import cKDTree

from hydrapick.evaluation.metrics import match_picks, micrograph_keys
from hydrapick.picks import Picks

BINS = (0.0, 0.9, 1.1, 1.4, np.inf)  # nearest labelled neighbour, in particle diameters


def neighbour_distance(truth: Picks) -> np.ndarray:
    """Each labelled particle's distance to the nearest other one on its micrograph (inf when alone)."""
    out = np.full(len(truth), np.inf)
    keys = micrograph_keys(truth.micrograph)
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        if len(idx) > 1:
            xy = np.stack([truth.x[idx], truth.y[idx]], axis=1)
            out[idx] = cKDTree(xy).query(xy, k=2)[0][:, 1]
    return out


def score_and_rank(truth: Picks, picks: Picks, box: float) -> tuple[np.ndarray, np.ndarray]:
    """Per labelled particle: the score of the pick matched to it (nan if none), and that pick's place
    in the picker's ranking of its micrograph in units of the micrograph's labelled particles (inf if
    none matched)."""
    matched = match_picks(truth, picks, box)
    keys = micrograph_keys(picks.micrograph)
    labelled = dict(zip(*np.unique(micrograph_keys(truth.micrograph), return_counts=True), strict=True))
    rank = np.empty(len(picks))
    for key in np.unique(keys):
        idx = np.flatnonzero(keys == key)
        order = np.argsort(-picks.score[idx], kind="stable")
        rank[idx[order]] = np.arange(len(idx)) / max(1, labelled.get(key, 1))
    score, place = np.full(len(truth), np.nan), np.full(len(truth), np.inf)
    hit = matched >= 0
    score[matched[hit]] = picks.score[hit]
    place[matched[hit]] = rank[hit]
    return score, place


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path, help="a compare_pickers.py output folder holding summary.json")
    parser.add_argument("--pickers", help="comma-separated pickers of the run (default: all)")
    args = parser.parse_args(argv)
    summary, _, truth, pickers = load_run(args.run, args.pickers)
    box = float(summary["box_px"])
    diameter_px = summary["diameter_A"] / summary["pixel_size_A"]
    near = neighbour_distance(truth) / diameter_px
    groups = np.digitize(near, BINS[1:-1])
    labels = [f"< {BINS[1]}", *(f"{a}-{b}" for a, b in zip(BINS[1:-2], BINS[2:-1], strict=True)),
              f">= {BINS[-2]}"]
    print(f"{summary['dataset']}: {len(truth)} labelled particles in the scored region; nearest labelled "
          "neighbour in diameters")
    print(f"{'picker':<16}{'neighbour':>11}{'particles':>11}{'matched':>9}{'median score':>14}"
          f"{'median place':>14}")
    for name, picks in pickers.items():
        score, rank = score_and_rank(truth, picks, box)
        for g, label in enumerate(labels):
            sel = groups == g
            if not sel.any():
                continue
            found = sel & ~np.isnan(score)
            median = float(np.median(score[found])) if found.any() else float("nan")
            print(f"{name:<16}{label:>11}{int(sel.sum()):>11}{int(found.sum()):>9}{median:14.3f}"
                  f"{float(np.median(rank[sel])):14.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
