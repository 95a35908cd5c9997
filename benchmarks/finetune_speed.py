"""Wall time of `hydrapick finetune` on 5 micrographs of 4096 x 4096 pixels (target: under 5 minutes on
a 2-core CPU).

The micrographs are simulated first (not timed) into a work folder, as MRC files with RELION STAR
coordinates, then `hydrapick.training.finetune` runs exactly as the command does: reading, resampling,
body features, the 2-fold cross-validated calibration (two fold heads) and the final head, and writing
the checkpoint. The base model is the given checkpoint, or a freshly initialised network of the chosen
architecture (fine-tuning costs the same whatever the weights).

    python benchmarks/finetune_speed.py                     # light network, 2 threads
    python benchmarks/finetune_speed.py --architecture thesis
    python benchmarks/finetune_speed.py --model base.pt --workdir /tmp/ftbench
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="base checkpoint (default: a fresh network of --architecture)")
    parser.add_argument("--architecture", choices=["light", "thesis"], default="light")
    parser.add_argument("-n", type=int, default=5, help="micrographs (default 5)")
    parser.add_argument("--size", type=int, default=4096, help="micrograph side in pixels (default 4096)")
    parser.add_argument("--pixel-size", type=float, default=1.0, help="Å per pixel (default 1.0)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, help="override FinetuneConfig.steps")
    parser.add_argument("--workdir", help="keep the simulated micrographs here (reused when present)")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from hydrapick.config import FinetuneConfig, ModelConfig, SimulationConfig
    from hydrapick.model import HydraPicker
    from hydrapick.simulation import procedural_structure, simulate_dataset
    from hydrapick.training import finetune

    work = Path(args.workdir or tempfile.mkdtemp(prefix="ftbench-"))
    structure = procedural_structure("globular", 7, mass_kDa=300.0)
    mics = sorted((work / "micrographs").glob("*.mrc"))
    if len(mics) < args.n:
        start = time.perf_counter()
        config = SimulationConfig(shape_px=(args.size, args.size),
                                  pixel_size_A_range=(args.pixel_size, args.pixel_size))
        simulate_dataset(work, args.n, config, structure=structure, seed=1)
        mics = sorted((work / "micrographs").glob("*.mrc"))
        seconds = time.perf_counter() - start
        print(f"simulated {args.n} micrographs of {args.size}x{args.size} in {seconds:.0f} s "
              f"(not part of the timing) -> {work}")
    mics = mics[: args.n]

    if args.model:
        base = args.model
    else:
        mc = ModelConfig.light() if args.architecture == "light" else ModelConfig.thesis()
        base = (HydraPicker(mc), {"thresholds": {"generic": 0.5}})

    # Each event closes the time since the previous one; that gap is charged to the event's stage.
    stages: dict[str, float] = {}
    last = [0.0]

    def progress(event) -> None:
        now = time.perf_counter()
        names = {"load": "read+resample", "features": "body features"}
        stage = names.get(event.kind, event.phase or event.kind)
        stages[stage] = stages.get(stage, 0.0) + now - last[0]
        last[0] = now

    overrides = {"steps": args.steps} if args.steps else {}
    config = FinetuneConfig(**overrides)
    out = work / "finetuned.pt"
    cpu_start = time.process_time()
    start = last[0] = time.perf_counter()
    result = finetune(base, "bench", [str(m) for m in mics], [str(work / "coordinates")],
                      structure.diameter_A, pixel_size_A=args.pixel_size, config=config, device="cpu",
                      output=out, progress=progress)
    total = time.perf_counter() - start
    cpu = time.process_time() - cpu_start

    load = os.getloadavg()
    print(f"fine-tuning {len(mics)} micrographs of {args.size}x{args.size} px at {args.pixel_size} Å/px, "
          f"particle {structure.diameter_A:.0f} Å, {args.architecture if not args.model else args.model}, "
          f"{args.threads} threads, steps {config.steps} x batch {config.batch_size} x crop "
          f"{config.crop_px} px")
    # On a shared machine the wall time includes waiting for the CPU; the process's CPU time does not.
    print(f"total wall time: {total:.1f} s ({total / 60:.2f} min); CPU time {cpu:.1f} s "
          f"(= {cpu / args.threads / 60:.2f} min of wall time on {args.threads} dedicated cores)")
    for stage, seconds in stages.items():
        print(f"  {stage:<14} {seconds:7.1f} s")
    print(f"  {'scoring+save':<14} {total - sum(stages.values()):7.1f} s")
    print(f"threshold {result.threshold:.3f} ({result.report.get('source')}); "
          f"load average during the run {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}")


if __name__ == "__main__":
    main()
