"""What `hydrapick pick --adapt` costs: adaptation + picking against picking alone, on 2 CPU cores.

The case of the adaptation issue: 20 simulated micrographs of 4096 x 4096 px with a particle of about
150 Å (a procedural 200 kDa globular particle at 1.0 Å/px, seed 3), written once to ``--work`` (reused
when present; not timed). Then the two commands run in turn, A B A B ... (``--repeats`` pairs), each as
a whole process exactly as a user runs it:

    A: hydrapick pick <20 micrographs> --diameter D --apix 1.0 --device cpu -o plain.star -q
    B: hydrapick pick <20 micrographs> --diameter D --apix 1.0 --device cpu -o adapted.star -q --adapt

Pairing keeps the ratio meaningful on a shared machine whose speed drifts: each pair's ratio B/A is
printed, and the median over pairs is the figure. Wall, user and system seconds come from the operating
system's accounting of each finished child (``resource.getrusage(RUSAGE_CHILDREN)``), the peak memory
from its largest resident set. The last adapted run's report (kept or not, seeds, self-check) and the AP
of both outputs against the simulation's truth are printed too, so the cost is read beside what it buys.

    python benchmarks/adapt_cost.py                       # 20 x 4096^2, 2 pairs
    python benchmarks/adapt_cost.py --count 4 --size 1024 --repeats 1 --work /tmp/adapt_small   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def simulate(work: Path, count: int, size: int) -> float:
    """The micrographs of the benchmark in ``work`` (made when missing); returns the particle diameter."""
    manifest = work / "manifest.toml"
    if not manifest.exists() or len(list((work / "micrographs").glob("*.mrc"))) < count:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hydrapick", "simulate", "--shape", "globular", "--mass", "200",
                        "-n", str(count), "--size", str(size), "--pixel-size", "1.0", "--seed", "3",
                        "-o", str(work), "--force", "-q"], check=True)
        print(f"simulated {count} micrographs of {size} x {size} px in {time.perf_counter() - start:.0f} s "
              f"(not timed) -> {work}")
    with open(manifest, "rb") as f:
        return float(tomllib.load(f)["simulation"]["structure"]["diameter_A"])


def timed(cmd: list[str]) -> dict[str, float]:
    """Run ``cmd`` to completion; its wall, user and system seconds and peak RSS (MB)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return {"wall": wall, "user": after.ru_utime - before.ru_utime, "sys": after.ru_stime - before.ru_stime,
            # ru_maxrss of RUSAGE_CHILDREN is the largest child so far: right for the first run of a kind,
            # an upper bound after that (both commands' peaks are printed from their own first runs).
            "peak_mb": after.ru_maxrss / 1024}


def score(work: Path, picks: Path, diameter_A: float) -> dict:
    """`hydrapick evaluate --json` of ``picks`` against the simulation's truth: the pooled report."""
    out = picks.with_suffix(".eval.json")
    subprocess.run([sys.executable, "-m", "hydrapick", "evaluate", "--truth", str(work / "coordinates"),
                    "--picks", str(picks), "--diameter", f"{diameter_A}", "--apix", "1.0", "--micrographs",
                    str(work / "micrographs"), "--json", str(out)], check=True, capture_output=True)
    return next(iter(json.loads(out.read_text())["pickers"].values()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20, help="micrographs (default 20)")
    parser.add_argument("--size", type=int, default=4096, help="micrograph side in pixels (default 4096)")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs (default 2)")
    parser.add_argument("--work", default=str(ROOT / "cache" / "adapt_cost"), help="micrographs and outputs")
    parser.add_argument("--threads", type=int, help="--threads for both commands (default: every core)")
    args = parser.parse_args()

    work = Path(args.work)
    diameter = simulate(work, args.count, args.size)
    mics = sorted(str(p) for p in (work / "micrographs").glob("*.mrc"))[: args.count]
    base = [sys.executable, "-m", "hydrapick", "pick", *mics, "--diameter", f"{diameter:.1f}",
            "--apix", "1.0", "--device", "cpu", "-q",
            *(["--threads", str(args.threads)] if args.threads else [])]
    plain_out, adapt_out = work / "out" / "plain.star", work / "out" / "adapted.star"
    adapt_model = work / "out" / "adapted.pt"
    plain_out.parent.mkdir(parents=True, exist_ok=True)
    commands = {"pick": [*base, "-o", str(plain_out)],
                "pick --adapt": [*base, "-o", str(adapt_out), "--adapt", "--adapt-output", str(adapt_model)]}
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in commands}
    for _ in range(args.repeats):
        for name, cmd in commands.items():
            adapt_model.unlink(missing_ok=True)
            runs[name].append(timed(cmd))

    load = os.getloadavg()
    print(f"{len(mics)} micrographs of {args.size} x {args.size} px, particle {diameter:.1f} Å at 1.0 Å/px; "
          f"CPU, {args.threads or os.cpu_count()} threads; {args.repeats} A/B pairs; "
          f"load average at the end {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")
    print(f"{'command':<14} {'wall s (median)':>16} {'s/mic':>7} {'user s':>8} {'sys s':>7} {'peak MB':>8}")
    for name, rs in runs.items():
        wall = statistics.median(r["wall"] for r in rs)
        user, sys_ = (statistics.median(r[k] for r in rs) for k in ("user", "sys"))
        print(f"{name:<14} {wall:16.1f} {wall / len(mics):7.2f} {user:8.1f} {sys_:7.1f} "
              f"{rs[0]['peak_mb']:8.0f}")
    ratios = [b["wall"] / a["wall"] for a, b in zip(runs["pick"], runs["pick --adapt"], strict=True)]
    cpu_ratios = [(b["user"] + b["sys"]) / (a["user"] + a["sys"])
                  for a, b in zip(runs["pick"], runs["pick --adapt"], strict=True)]
    print(f"ratio adapt / plain, pair by pair: wall {', '.join(f'{r:.2f}' for r in ratios)} "
          f"(median {statistics.median(ratios):.2f}); CPU {', '.join(f'{r:.2f}' for r in cpu_ratios)} "
          f"(median {statistics.median(cpu_ratios):.2f}); target <= 3")

    from hydrapick.checkpoint import load_checkpoint  # what adaptation learnt in the last run

    adaptation = load_checkpoint(adapt_model)[1].get("adaptation") if adapt_model.exists() else None
    if adaptation:
        print(f"adaptation: kept {adaptation['kept']} ({adaptation['reason']}); learnt from "
              f"{len(adaptation['micrographs'])} micrographs, seeds per round "
              f"{[s['particles'] for s in adaptation['seeds']]}, about "
              f"{adaptation['estimated_particles_per_micrograph']:.0f} particles per micrograph")
    else:
        print("adaptation: no adapted model written (the self-check kept the generic head)")
    # AP from every candidate (the _candidates.star file), precision and recall at the threshold used.
    for name, path in (("pick", plain_out), ("pick --adapt", adapt_out)):
        every = score(work, path.with_name(path.stem + "_candidates.star"), diameter)
        kept = score(work, path, diameter)
        print(f"{name:<14} AP {every['ap']:.3f}  best F1 {every['best_f1']:.3f}  at its threshold: "
              f"{kept['n_picks']} picks, precision {kept['precision']:.3f}, recall {kept['recall']:.3f}")


if __name__ == "__main__":
    main()
