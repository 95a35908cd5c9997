"""What scale calibration costs: ``hydrapick pick`` with calibration (the default) against the same command
with ``--no-calibrate``, whole commands, in turn (A B A B), on the two runs the targets name.

- ``4k``: 20 micrographs of 4096 x 4096 px (target: calibrated wall time at most 1.15x);
- ``1k``: 200 micrographs of 1024 x 1024 px (target: at most 1.05x).

Micrographs are simulated (`hydrapick simulate --shape globular --mass 300 --pixel-size 1.0`: a 300 kDa
particle, about 144 Å, in simulated ice, noise and CTF; made once in ``--work``, not timed); the labelled
diameter is typed. (Noise with dark blobs, the first version of this benchmark, is no particle the model
knows: calibration settled at half or twice the typed size there, which changed what picking itself
costs and said nothing of calibration.) Calibration may still settle a little off the typed diameter,
which changes what picking costs (a larger diameter is a smaller image at the model's scale), so a third
command isolates calibration's own cost: ``--no-calibrate`` at the diameter calibration chose.
Each pair's ratio is printed; the median over ``--repeats`` pairs is the figure (the pairing keeps it
meaningful on a machine whose speed drifts).

    python benchmarks/calibration_cost.py                     # both runs, 3 pairs (about 20 min idle)
    python benchmarks/calibration_cost.py --runs 1k --repeats 1 --count-1k 40    # a smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import harness as h
from finetune import simulate

MASS_KDA = 300.0
RUNS = {"4k": (4096, 20), "1k": (1024, 200)}
SEEDS = {"4k": 12, "1k": 11}


def measure(name: str, size: int, count: int, args: argparse.Namespace) -> list[dict]:
    ds = simulate(args.work / f"sim_{name}_{count}x{size}", count, size, MASS_KDA, SEEDS[name])
    typed = ds.diameter_A
    out = args.work / f"{name}_out"
    threads = ["--threads", str(args.threads)] if args.threads else []
    arms: dict[str, list[h.Result]] = {"calibrated": [], "--no-calibrate": [], "--no-calibrate at chosen": []}
    chosen = None
    for _ in range(args.repeats):
        for i, arm in enumerate(arms):
            stem = f"{name}_arm{i}_{len(arms[arm])}"  # one output per arm and repeat
            for old in out.glob(f"{stem}*"):
                old.unlink()
            extra = [*threads] if arm == "calibrated" else ["--no-calibrate", *threads]
            factor = chosen / typed if arm.endswith("chosen") else 1.0
            result = h.run_hydrapick(ds, out, name=stem, diameter_factor=factor, extra=extra)
            if result.error:
                raise SystemExit(f"{name} {arm}: {result.error}")
            if arm == "calibrated":
                chosen = json.loads((out / f"{stem}_scale_calibration.json").read_text())["diameter_A"]
            arms[arm].append(result)
    base = arms["calibrated"]
    rows = []
    for arm, results in arms.items():
        ratios = [a.seconds / b.seconds for a, b in zip(base, results, strict=True)]
        cpu_ratios = [a.cpu_seconds / b.cpu_seconds for a, b in zip(base, results, strict=True)]
        rows.append({"run": f"{count} x {size}^2", "arm": arm,
                     "wall_s": statistics.median(r.seconds for r in results),
                     "cpu_s": statistics.median(r.cpu_seconds for r in results),
                     "wall_ratio": statistics.median(ratios), "cpu_ratio": statistics.median(cpu_ratios),
                     "ratio_pairs": [round(x, 3) for x in ratios], "typed_A": round(typed, 1),
                     "chosen_A": chosen})
    return rows


COLUMNS = [("run", "run", ""), ("arm", "command", ""), ("wall_s", "wall s", ".1f"), ("cpu_s", "CPU s", ".1f"),
           ("wall_ratio", "calibrated / this, wall", ".3f"), ("cpu_ratio", "CPU", ".3f"),
           ("typed_A", "typed Å", ".1f"), ("chosen_A", "chosen Å", ".1f")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=",".join(RUNS), help="4k, 1k or both (default: both)")
    parser.add_argument("--repeats", type=int, default=3, help="A B pairs per run (default 3)")
    parser.add_argument("--count-4k", type=int, default=RUNS["4k"][1], help="4096-px micrographs")
    parser.add_argument("--count-1k", type=int, default=RUNS["1k"][1], help="1024-px micrographs")
    parser.add_argument("--threads", type=int, help="hydrapick's --threads (default: every core)")
    parser.add_argument("--work", type=Path, default=h.CACHE / "calibration_cost",
                        help="micrographs and outputs")
    parser.add_argument("--results", type=Path, help="results file (default: benchmarks/results/"
                        "calibration_cost.json; cache/benchmarks/ for a subset)")
    args = parser.parse_args(argv)
    counts = {"4k": args.count_4k, "1k": args.count_1k}
    rows = []
    for name in args.runs.split(","):
        if name not in RUNS:
            raise SystemExit(f"--runs: unknown run {name!r}; choose from {', '.join(RUNS)}")
        rows += measure(name, RUNS[name][0], counts[name], args)
        print(h.table(rows, COLUMNS), flush=True)
    full = args.runs == ",".join(RUNS) and counts == {k: v[1] for k, v in RUNS.items()}
    path = args.results or (h.RESULTS if full else h.CACHE) / "calibration_cost.json"
    h.write_results(path, "calibration_cost", rows, repeats=args.repeats, mass_kDa=MASS_KDA)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
