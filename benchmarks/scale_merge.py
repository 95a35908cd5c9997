"""Picking at several scales around the typed diameter and merging the candidates (issue 18, diameter
tolerance): AP at 0.8x, 1x and 1.25x the true diameter, like diameter_tolerance.py.

For a typed diameter D, `hydrapick.pick` runs once per factor r of ``--scales`` with the diameter r x D
(candidates from score 0.05). Candidates of all runs within 0.3 D of each other are one place: its score is
the mean over the runs of each run's best score there (0 where a run has no candidate), its position that
of the highest-scoring candidate. Each micrograph is scored with the true diameter's box and edge rule, so
only the typed diameter and the merging change between columns. One factor (``--scales 1``) is plain
picking, up to the merge radius.

    python benchmarks/scale_merge.py --scales 0.89,1,1.12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mrcfile
import numpy as np

import hydrapick
from hydrapick.evaluation import load_coordinates
from hydrapick.picks import micrograph_key

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from diameter_tolerance import FACTORS, SPLITS, true_diameter_ap  # noqa: E402
from generic_model import targets  # noqa: E402

MERGE_RADIUS = 0.3  # typed diameters


def merged_picks(target: dict, micrographs: list[Path], typed_A: float, scales: list[float], work: Path,
                 threads: int) -> Path:
    """Pick at each scale, merge per micrograph; the merged picks as a Topaz-format file."""
    runs = []
    for k, r in enumerate(scales):
        out = work / f"scale{k}.star"
        hydrapick.pick([str(m) for m in micrographs], out, diameter_A=typed_A * r,
                       pixel_size_A=target["apix"], threshold=0.05, border_A=target["diameter_A"] / 2,
                       device="cpu", num_threads=threads)
        picks = load_coordinates(out).picks
        runs.append((picks, np.array([micrograph_key(str(v)) for v in picks.micrograph])))
    rows = []
    for m in micrographs:
        key = micrograph_key(m.name)
        with mrcfile.open(m, header_only=True) as header:
            apix = target["apix"] or float(header.voxel_size.x)
        radius = MERGE_RADIUS * typed_A / apix
        xy = np.concatenate([np.stack([p.x[keys == key], p.y[keys == key]], 1) for p, keys in runs])
        run_of = np.concatenate([np.full(int((keys == key).sum()), k) for k, (_, keys) in enumerate(runs)])
        score = np.concatenate([p.score[keys == key] for p, keys in runs])
        taken = np.zeros(len(score), bool)
        for i in np.argsort(-score):
            if taken[i]:
                continue
            near = (np.hypot(*(xy - xy[i]).T) < radius) & ~taken
            of_run = (near & (run_of == k) for k in range(len(scales)))
            best = [score[here].max() for here in of_run if here.any()]
            taken |= near
            rows.append(f"{m.stem}\t{xy[i, 0]:.1f}\t{xy[i, 1]:.1f}\t{sum(best) / len(scales):.5f}\n")
    path = work / "merged.txt"
    path.write_text("image_name\tx_coord\ty_coord\tscore\n" + "".join(rows))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.89,1,1.12", help="factors of the typed diameter")
    parser.add_argument("--split", choices=sorted(SPLITS), default="trainvalid")
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    scales = [float(v) for v in args.scales.split(",")]
    if not scales or min(scales) <= 0:
        raise SystemExit("--scales: positive factors, e.g. 0.89,1,1.12")

    print(f"scales {scales}; AP at {', '.join(f'{f:g}x' for f in FACTORS)} the true diameter")
    for t in targets(args.corpus, args.real):
        if t["name"] == "empiar10028":
            micrographs = [p for part in SPLITS[args.split] for p in (t[part] or [])]
        else:
            micrographs = t["test"]
        aps = []
        for f in FACTORS:
            with tempfile.TemporaryDirectory() as w:
                work = Path(w)
                picks = merged_picks(t, micrographs, t["diameter_A"] * f, scales, work, args.threads)
                aps.append(true_diameter_ap(t, micrographs, picks, work))
        print(f"{t['name']:<14}" + "".join(f"{a:8.3f}" for a in aps)
              + f"   worst drop {aps[1] - min(aps):.3f}", flush=True)


if __name__ == "__main__":
    main()
