"""AP when the diameter given is off: picks at 0.8x, 1.0x and 1.25x the true diameter (issue 18).

Users know their particle's size to perhaps a quarter. For each model and target, `hydrapick.pick` runs
in-process at each factor of the true diameter (candidates from score 0.05, the default minimum distance
of the diameter *given*), and every run is scored against the same truth with the same box (the true
diameter) and edge rule (truth and picks at least half a true diameter from the edge), so only the
diameter typed changes between the columns.

Targets: EMPIAR-10028 (train+valid by default; `--split test` reports the held-out split) and the
simulated held-out targets' test micrographs (recipes/generic/targets.txt, made by make_corpus.sh).

    python benchmarks/diameter_tolerance.py --models bundled,runs/generic4/model.pt --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import hydrapick
from hydrapick.evaluation import evaluate_picks_files

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from generic_model import targets  # noqa: E402

FACTORS = (0.8, 1.0, 1.25)
SPLITS = {"trainvalid": ("train", "valid"), "test": ("test",)}


def score(model: str, target: dict, micrographs: list[Path], factor: float, work: Path,
          threads: int) -> float:
    out = work / f"{target['name']}_{factor:g}.star"
    hydrapick.pick([str(m) for m in micrographs], out, model=None if model == "bundled" else model,
                   diameter_A=target["diameter_A"] * factor, pixel_size_A=target["apix"], threshold=0.05,
                   border_A=target["diameter_A"] / 2, device="cpu", num_threads=threads)
    return true_diameter_ap(target, micrographs, out, work)


def true_diameter_ap(target: dict, micrographs: list[Path], picks: Path, work: Path) -> float:
    """AP of ``picks`` on ``micrographs`` with the box and the edge rule of the true diameter, whatever
    diameter was typed, so only the typed diameter changes between runs."""
    return float(true_diameter_report(target, micrographs, picks, work).ap)


def true_diameter_report(target: dict, micrographs: list[Path], picks: Path, work: Path,
                         threshold: float | None = None):
    """`true_diameter_ap`'s whole evaluation report (precision and recall at ``threshold`` too)."""
    truth = work / f"{target['name']}_truth"  # the truth of these micrographs only
    if not truth.exists():
        truth.mkdir()
        for m in micrographs:
            (truth / f"{m.stem}.star").symlink_to((target["truth"] / f"{m.stem}.star").resolve())
    result = evaluate_picks_files(truth, picks, diameter_A=target["diameter_A"], pixel_size_A=target["apix"],
                                  border_A=target["diameter_A"] / 2, micrographs=micrographs[0].parent,
                                  thresholds=threshold)
    return next(iter(result.reports.values()))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bundled",
                        help="comma-separated checkpoints; 'bundled' is the bundled generic model")
    parser.add_argument("--split", choices=sorted(SPLITS), default="trainvalid",
                        help="EMPIAR-10028 micrographs to score (default trainvalid: 061-065)")
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--only", help="comma-separated target names")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    rows = []
    for t in targets(args.corpus, args.real):
        if args.only and t["name"] not in args.only.split(","):
            continue
        if t["name"] == "empiar10028":
            micrographs = [p for part in SPLITS[args.split] for p in (t[part] or [])]
            name = f"empiar10028 {args.split}"
        else:
            micrographs, name = t["test"], t["name"]
        for model in args.models.split(","):
            with tempfile.TemporaryDirectory() as work:
                aps = [score(model, t, micrographs, f, Path(work), args.threads) for f in FACTORS]
            by_factor = {f"{f:g}x": ap for f, ap in zip(FACTORS, aps, strict=True)}
            rows.append({"target": name, "model": model, **by_factor})
            print(json.dumps(rows[-1]), flush=True)

    print(f"\n{'target':<24}{'model':<28}" + "".join(f"{f'{f:g}x':>8}" for f in FACTORS)
          + f"{'worst drop':>12}")
    for r in rows:
        aps = [r[f"{f:g}x"] for f in FACTORS]
        drop = r["1x"] - min(aps)
        print(f"{r['target']:<24}{r['model'][-27:]:<28}" + "".join(f"{a:>8.3f}" for a in aps)
              + f"{drop:>12.3f}")


if __name__ == "__main__":
    main()
