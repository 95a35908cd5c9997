"""Can the picker find the right particle scale by itself? AP and label-free criteria over a fine sweep.

A user's diameter may be a quarter off. If a label-free criterion peaked where AP peaks, `pick` could try
a few scales around the typed diameter on a few micrographs and pick at the best. For each dataset this
picks at factors 0.7-1.43 of the true diameter (box, edge rule and truth of the true diameter, as
diameter_tolerance.py), scores AP, and records every candidate's score. Then, for a user who typed
u x the true diameter (u = 0.8, 1, 1.25), it lets each criterion choose a factor within 0.8-1.25 u and
reports the AP at the chosen factor against the AP at u.

Criteria (per micrograph, then averaged): the mean of the k best candidate scores (k = 5, 10, 20), the
best score, and the mean and sum of the scores above the calibrated threshold.

Design data (fresh simulations of 8 procedural shapes, made by `--simulate`) and held-out data (the
simulated targets' test micrographs and EMPIAR-10028 train+valid) are kept apart: the criterion is
chosen on the first, then checked on the second.

    python benchmarks/scale_search.py --simulate runs/scale_design --out runs/scale_search.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import tomllib
from pathlib import Path

import numpy as np

import hydrapick
from hydrapick.evaluation import evaluate_picks_files, load_coordinates

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from generic_model import targets  # noqa: E402

FACTORS = (0.7, 0.77, 0.83, 0.91, 1.0, 1.1, 1.2, 1.3, 1.43)
USER_ERRORS = (0.8, 1.0, 1.25)
SHAPES = ("globular", "elongated", "flat", "multidomain", "cyclic", "ring", "membrane", "ribosome")
THRESHOLD = 0.359  # the bundled stage-6 model's calibrated threshold


def simulate_design(folder: Path) -> None:
    for i, shape in enumerate(SHAPES, 1):
        if not (folder / shape / "manifest.toml").exists():
            subprocess.run([sys.executable, "-m", "hydrapick", "simulate", "--shape", shape, "-n", "4",
                            "--size", "1024", "--seed", str(5000 + i), "-o", str(folder / shape), "--quiet"],
                           check=True)


def datasets(design: Path | None, corpus: Path, real: Path):
    if design is not None:
        for shape in SHAPES:
            manifest = tomllib.loads((design / shape / "manifest.toml").read_text())
            yield ("design", shape, sorted((design / shape / "micrographs").glob("*.mrc")),
                   design / shape / "coordinates", manifest["simulation"]["structure"]["diameter_A"], None)
    for t in targets(corpus, real):
        if t["name"] == "empiar10028":
            yield ("held-out", "empiar10028 train+valid", t["train"] + t["valid"], t["truth"],
                   t["diameter_A"], t["apix"])
        else:
            yield "held-out", t["name"], t["test"], t["truth"], t["diameter_A"], None


def sweep(mics: list[Path], truth_dir: Path, diameter_A: float, apix: float | None, threads: int) -> list:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        truth = work / "truth"
        truth.mkdir()
        for m in mics:
            (truth / f"{m.stem}.star").symlink_to((truth_dir / f"{m.stem}.star").resolve())
        for f in FACTORS:
            out = work / f"picks_{f:g}.star"
            hydrapick.pick([str(m) for m in mics], out, diameter_A=diameter_A * f, pixel_size_A=apix,
                           threshold=0.05, border_A=diameter_A / 2, device="cpu", num_threads=threads)
            result = evaluate_picks_files(truth, out, diameter_A=diameter_A, pixel_size_A=apix,
                                          border_A=diameter_A / 2, micrographs=mics[0].parent)
            picks = load_coordinates(out).picks
            scores = {k: np.sort(p.score)[::-1].tolist() for k, p in picks.by_micrograph()}
            rows.append({"factor": f, "ap": float(next(iter(result.reports.values())).ap), "scores": scores})
    return rows


def criterion(scores: dict[str, list[float]], name: str) -> float:
    values = []
    for s in scores.values():
        s = np.asarray(s)
        above = s[s >= THRESHOLD]
        if name.startswith("top"):
            values.append(s[:int(name[3:])].mean() if len(s) else 0.0)
        elif name == "best":
            values.append(s[:1].sum())
        elif name == "mean_above":
            values.append(above.mean() if len(above) else 0.0)
        elif name == "sum_above":
            values.append(above.sum())
    return float(np.mean(values))


CRITERIA = ("top5", "top10", "top20", "best", "mean_above", "sum_above")


def report(results: list[dict]) -> None:
    print("AP by factor of the true diameter")
    print(f"{'dataset':<26}" + "".join(f"{f:>7g}" for f in FACTORS))
    for r in results:
        print(f"{r['name'][:25]:<26}" + "".join(f"{x['ap']:7.3f}" for x in r["rows"]))
    for group in ("design", "held-out"):
        chosen = [r for r in results if r["group"] == group]
        if not chosen:
            continue
        print(f"\n{group}: AP change when each criterion chooses the factor within 0.8-1.25x the typed one")
        print(f"{'criterion':<12}{'mean':>8}{'worst':>8}{'typed 1x':>10}")
        for name in CRITERIA:
            changes, at_true = [], []
            for r in chosen:
                f = np.array([x["factor"] for x in r["rows"]])
                ap = np.array([x["ap"] for x in r["rows"]])
                c = np.array([criterion(x["scores"], name) for x in r["rows"]])
                for u in USER_ERRORS:
                    window = np.flatnonzero((f >= 0.8 * u - 1e-6) & (f <= 1.25 * u + 1e-6))
                    pick = window[np.argmax(c[window])]
                    change = ap[pick] - ap[np.argmin(abs(f - u))]
                    changes.append(change)
                    if u == 1.0:
                        at_true.append(change)
            print(f"{name:<12}{np.mean(changes):+8.3f}{min(changes):+8.3f}{np.mean(at_true):+10.3f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--simulate", type=Path, help="folder for the design simulations (made if absent)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--out", type=Path, help="JSON of every sweep; with --report-only, read from it")
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    if args.report_only:
        report(json.loads(args.out.read_text()))
        return
    if args.simulate:
        simulate_design(args.simulate)
    results = []
    for group, name, mics, truth, diameter_A, apix in datasets(args.simulate, args.corpus, args.real):
        rows = sweep(mics, truth, diameter_A, apix, args.threads)
        results.append({"group": group, "name": name, "rows": rows})
        print(name, " ".join(f"{x['ap']:.3f}" for x in results[-1]["rows"]), flush=True)
        if args.out:
            args.out.write_text(json.dumps(results))
    report(results)


if __name__ == "__main__":
    main()
