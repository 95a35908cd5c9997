"""Fine-tuning and adaptation: what ``hydrapick finetune`` and ``hydrapick pick --adapt`` cost on 2 CPU cores,
and what adaptation buys.

- ``finetune`` (target: under 5 minutes): `hydrapick.training.finetune` on 5 simulated micrographs of
  4096 x 4096 px (a procedural 300 kDa globular particle at 1.0 A/px), in-process, exactly as the command
  runs it (reading, resampling, body features, the 2-fold cross-validated calibration and the final head,
  writing the checkpoint), with the time of each stage. The base is the bundled model, or ``--model``.
- ``adapt`` (target: adaptation + picking at most 3x picking alone): 20 simulated micrographs of
  4096 x 4096 px (a 200 kDa globular particle at 1.0 A/px, about 150 A), ``hydrapick pick`` and
  ``hydrapick pick --adapt`` run in turn, A B A B (``--repeats`` pairs; each pair's ratio is printed and
  the median is the figure, which keeps it meaningful on a machine whose speed drifts). Both outputs are
  scored against the simulation's truth by the harness (AP, best F1; precision and recall at the default
  threshold), with what the adaptation learnt (kept or not, seeds, self-check).

Micrographs are simulated once into ``--work`` (reused; not timed).

    python benchmarks/finetune.py                                   # both parts (about 40 minutes here)
    python benchmarks/finetune.py --parts adapt --count 4 --size 1024 --repeats 1   # a smoke run
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import harness as h

PARTS = ("finetune", "adapt")


def simulate(work: Path, count: int, size: int, mass_kDa: float, seed: int) -> h.Dataset:
    """``count`` micrographs of a procedural globular particle at 1.0 A/px in ``work`` (made when missing)."""
    if len(list((work / "micrographs").glob("*.mrc"))) < count:
        start = time.perf_counter()
        h.run_checked([*h.HYDRAPICK, "simulate", "--shape", "globular", "--mass", f"{mass_kDa:g}", "-n",
                       str(count), "--size", str(size), "--pixel-size", "1.0", "--seed", str(seed), "-o",
                       str(work), "--force", "-q"], "hydrapick simulate")
        print(f"simulated {count} micrographs of {size} x {size} px in {time.perf_counter() - start:.0f} s "
              f"(not timed) -> {work}", flush=True)
    ds = h.simulation(work, work.name)
    ds.micrographs = ds.micrographs[:count]
    return ds


def finetune_part(args: argparse.Namespace) -> list[dict]:
    import torch

    from hydrapick.config import FinetuneConfig
    from hydrapick.training import finetune

    torch.set_num_threads(args.threads or os.cpu_count())
    ds = simulate(args.work / f"finetune_{args.finetune_count}x{args.size}", args.finetune_count, args.size,
                  300.0, 1)
    # Each event closes the time since the previous one; that gap is charged to the event's stage.
    stages: dict[str, float] = {}
    last = [0.0]

    def progress(event) -> None:
        now = time.perf_counter()
        names = {"load": "read+resample", "features": "body features"}
        stage = names.get(event.kind, event.phase or event.kind)
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now

    config = FinetuneConfig()
    cpu_start = time.process_time()
    start = last[0] = time.perf_counter()
    result = finetune(args.model, "bench", [str(m) for m in ds.micrographs], [str(ds.truth_dir)],
                      ds.diameter_A, pixel_size_A=ds.pixel_size_A, config=config, device="cpu",
                      output=args.work / "finetuned.pt", progress=progress)
    total, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    stages["scoring+save"] = total - sum(stages.values())
    print(f"\nfinetune: {len(ds.micrographs)} micrographs of {args.size} x {args.size} px, particle "
          f"{ds.diameter_A:.0f} A, steps {config.steps} x batch {config.batch_size} x crop "
          f"{config.crop_px} px: "
          f"{total:.1f} s wall ({total / 60:.2f} min; target < 5 min), {cpu:.1f} s CPU; threshold "
          f"{result.threshold:.3f}")
    for stage, seconds in stages.items():
        print(f"  {stage:<14} {seconds:7.1f} s")
    return [{"part": "finetune", "micrographs": len(ds.micrographs), "size_px": args.size,
             "wall_s": round(total, 1), "cpu_s": round(cpu, 1), "threshold": round(result.threshold, 4),
             "stages_s": {k: round(v, 1) for k, v in stages.items()}}]


def adapt_part(args: argparse.Namespace) -> list[dict]:
    from hydrapick.checkpoint import load_checkpoint

    ds = simulate(args.work / f"adapt_{args.count}x{args.size}", args.count, args.size, 200.0, 3)
    out = args.work / "adapt_out"
    runs: dict[str, list[h.Result]] = {"pick": [], "pick --adapt": []}
    for _ in range(args.repeats):
        runs["pick"].append(h.run_hydrapick(ds, out, name="plain", model=args.model, threads=args.threads))
        runs["pick --adapt"].append(h.run_hydrapick(ds, out, name="adapted", adapt=True, model=args.model,
                                                    threads=args.threads))
    rows = []
    for name, rs in runs.items():
        errors = [r.error for r in rs if r.error]
        if errors:
            raise SystemExit(f"{name}: {errors[0]}")
        h.score(rs[-1], ds)
        wall = statistics.median(r.seconds for r in rs)
        rows.append({**rs[-1].row(), "part": "adapt", "picker": f"hydrapick {name}", "wall_s": round(wall, 1),
                     "cpu_s": round(statistics.median(r.cpu_seconds for r in rs), 1),
                     "s_per_mic": round(wall / len(ds.micrographs), 2)})
    ratios = [b.seconds / a.seconds for a, b in zip(runs["pick"], runs["pick --adapt"], strict=True)]
    rows[-1]["ratio_pairs"] = [round(r, 2) for r in ratios]
    rows[-1]["ratio"] = round(statistics.median(ratios), 2)
    model = out / "adapted_adapted.pt"
    adaptation = load_checkpoint(model)[1].get("adaptation") if model.exists() else None
    if adaptation:
        rows[-1]["adaptation"] = {"kept": adaptation["kept"], "reason": adaptation["reason"],
                                  "seeds": [s["particles"] for s in adaptation["seeds"]]}
    print(f"\nadapt: {len(ds.micrographs)} micrographs of {args.size} x {args.size} px, particle "
          f"{ds.diameter_A:.1f} A; {args.repeats} A/B pairs; wall ratio adapt / plain pair by pair "
          f"{', '.join(f'{r:.2f}' for r in ratios)} (median {statistics.median(ratios):.2f}; target <= 3); "
          f"adaptation: {rows[-1].get('adaptation') or 'no adapted model written (generic head kept)'}")
    return rows


COLUMNS = [("part", "part", ""), ("picker", "command", ""), ("wall_s", "wall s", ".1f"),
           ("cpu_s", "CPU s", ".1f"), ("s_per_mic", "s/mic", ".2f"), ("peak_MB", "peak MB", ".0f"),
           ("ap", "AP", ".3f"), ("best_f1", "best F1", ".3f"), ("precision", "P", ".3f"),
           ("recall", "R", ".3f")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default=",".join(PARTS), help="finetune, adapt or both (default: both)")
    parser.add_argument("--model", help="base checkpoint (default: the bundled model)")
    parser.add_argument("--size", type=int, default=4096, help="micrograph side in px (default: 4096)")
    parser.add_argument("--finetune-count", type=int, default=5, help="micrographs fine-tuned on (default 5)")
    parser.add_argument("--count", type=int, default=20, help="micrographs picked with --adapt (default 20)")
    parser.add_argument("--repeats", type=int, default=2, help="A B pairs of the adapt part (default 2)")
    parser.add_argument("--threads", type=int, help="CPU threads (default: every core)")
    parser.add_argument("--work", type=Path, default=h.CACHE / "finetune", help="micrographs and outputs")
    parser.add_argument("--results", type=Path, help="results file (default: benchmarks/results/"
                                                     "finetune.json; cache/benchmarks/ for a smoke run)")
    args = parser.parse_args(argv)
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    standard = (4096, 20, 5, 2, None)
    args.subset = (args.size, args.count, args.finetune_count, args.repeats, args.model) != standard

    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the start", flush=True)
    rows = finetune_part(args) if "finetune" in parts else []
    rows += adapt_part(args) if "adapt" in parts else []
    print("\n" + h.table(rows, COLUMNS))
    print(f"\nresults: {h.write_results(h.results_path('finetune', args), 'finetune', rows)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
