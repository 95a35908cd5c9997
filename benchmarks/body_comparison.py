"""Networks compared at equal CPU time: which body learns most per CPU minute (issue #18, scope 5).

Every candidate is trained from random weights on the same corpus with the same recipe (the bundled
model's domain randomisation: particles 0.85-1.2x the told size, 0.4 of the crops randomly
preprocessed), for the same wall-clock budget on the same cores, one after another. A short probe run
measures each network's seconds per step first; its phase-1 epochs are the budget divided by that.
Then each is scored zero-shot on the simulated held-out targets (`generic_model.py --no-finetune`) and on
EMPIAR-10028's train and valid micrographs with their preprocessing variants (`preprocess_variants.py
--split trainvalid`), and its picking time per EMPIAR-10028 micrograph is read from that run.

    python benchmarks/body_comparison.py --budget-min 10 --out runs/bodies
    python benchmarks/body_comparison.py --budget-min 1 --only light --out /tmp/bodies   # a smoke run

The budget is far below what the bundled model had (hours): the table ranks how fast each network
learns, which is what decides the body for a long run on the same machine, not how good it ends up.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "recipes" / "generic"))
from adopt import TOPAZ_VENV, variants, zero_shot  # noqa: E402  (the adoption rule's own measurements)

from hydrapick.config import TrainConfig  # noqa: E402

CORPUS = ROOT / "recipes" / "generic" / "corpus.toml"

# [model] tables: the bundled network's shape first, then one change each.
BASE_MODEL = {"preset": "light", "stem_stride": 4, "stem_kernel": 5, "particle_diameter_px": 48.0}
CANDIDATES: dict[str, dict] = {
    "light": {},  # the bundled shape: 32-channel body, 3 residual blocks, heads 64-512
    "wide": {"body_channels": 48, "head_channels": [96, 192, 384, 768]},
    "deep": {"body_blocks": 6},
    "scale64": {"particle_diameter_px": 64.0},
}
TRAIN = {"seed": 0, "crop_px": 256, "batch_size": 4, "steps_per_epoch": 100, "cache_dtype": "float16",
         "scale_min": 0.85, "scale_max": 1.2, "preprocess_probability": 0.4, "blur_max_px": 8.0,
         "pretrain_lr": 2e-3, "multihead_epochs": 0, "valid_every": 1000, "max_valid_tiles": 8,
         "checkpoint_every": 1}
PROBE_STEPS = TRAIN["steps_per_epoch"]


def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def write_config(path: Path, model: dict, train: dict) -> Path:
    lines = ["[model]"] + [f"{k} = {toml_value(v)}" for k, v in model.items()]
    lines += ["", "[train]"] + [f"{k} = {toml_value(v)}" for k, v in train.items()]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def train(config: Path, out: Path, threads: int, **overrides: int) -> list[dict]:
    """Run `hydrapick train` from random weights; the log's records."""
    command = [sys.executable, "-m", "hydrapick", "train", str(CORPUS), "--config", str(config),
               "--threads", str(threads), "-o", str(out), "-q"]
    for key, value in overrides.items():
        command += [f"--{key.replace('_', '-')}", str(value)]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    return [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines() if line.strip()]


def score(model: Path, name: str, out: Path, threads: int) -> dict:
    """Zero-shot AP on the simulated targets and the EMPIAR-10028 train+valid variants (the adoption
    rule's two measurements), and the CPU seconds per raw micrograph of the variants run."""
    sims = zero_shot(str(model), name, out / "sims", threads)
    sims.pop("empiar10028", None)  # the test split: reported by adopt.py, not part of the comparison
    real = variants(str(model), out / "variants", TOPAZ_VENV)
    raw = json.loads((out / "variants" / "trainvalid" / "raw" / "summary.json").read_text())
    picker = raw["pickers"]["hydrapick"]
    seconds = picker["cpu_seconds"] / picker["scores"]["n_micrographs"]
    return {"sims": sims, "real": real, "cpu_s_per_micrograph": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-min", type=float, default=10.0, help="training minutes per network")
    parser.add_argument("--only", help="comma-separated candidate names (default: all)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0, help="training seed (repeat a candidate with another "
                        "to see how far two runs of one network differ)")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "bodies")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="change or add the [train] setting KEY for every network (repeatable), e.g. "
                        "preprocess_probability=0 to see what the random preprocessing does, or "
                        "spectral_tilt=true")
    args = parser.parse_args()
    names = args.only.split(",") if args.only else list(CANDIDATES)
    unknown = sorted(set(names) - set(CANDIDATES))
    if unknown:
        raise SystemExit(f"unknown candidate(s) {', '.join(unknown)}; known: {', '.join(CANDIDATES)}")

    changes = {}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    for item in args.set:
        key, _, value = item.partition("=")
        if key not in defaults or not value:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY a [train] setting "
                             f"({', '.join(sorted(defaults))})")
        default = TRAIN.get(key, defaults[key])
        if isinstance(default, bool):
            if value.lower() not in ("true", "false"):
                raise SystemExit(f"--set {item!r}: {key} is true or false")
            changes[key] = value.lower() == "true"
        else:
            changes[key] = type(default)(value)

    results = {}
    for name in names:
        model = {**BASE_MODEL, **CANDIDATES[name]}
        work = args.out / name
        recipe = {**TRAIN, "seed": args.seed, **changes}
        probe_config = write_config(work / "probe.toml", model, {**recipe, "restart_epochs": 1})
        # Two whole epochs: the first carries the start-up (caches, allocator); the second is the pace,
        # with the per-epoch checkpoint included as in the real run.
        probe = train(probe_config, work / "probe", args.threads, pretrain_epochs=2,
                      steps_per_epoch=PROBE_STEPS)
        s_per_step = probe[-1]["time_s"] / PROBE_STEPS
        epochs = max(1, round(args.budget_min * 60 / (s_per_step * TRAIN["steps_per_epoch"])))
        config = write_config(work / "config.toml", model, {**recipe, "restart_epochs": epochs})
        started = time.monotonic()
        log = train(config, work / "run", args.threads, pretrain_epochs=epochs)
        trained_s = sum(r["time_s"] for r in log if "time_s" in r)
        row = {"s_per_step": s_per_step, "epochs": epochs, "trained_s": trained_s,
               "wall_s": time.monotonic() - started, "final_loss": log[-1]["train"]["loss"],
               **score(work / "run" / "model.pt", name, args.out, args.threads)}
        results[name] = row
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        print(f"{name} done: {epochs} epochs, {trained_s:.0f} s", flush=True)

    print(f"\nEqual-time comparison: {args.budget_min:g} min of training per network, "
          f"{args.threads} threads, seed {args.seed}" + "".join(f", {k} = {v}" for k, v in changes.items()))
    print(f"{'network':10s} {'s/step':>7s} {'steps':>6s} {'loss':>6s} {'4hhb':>6s} {'6b7n':>6s} {'6msm':>6s} "
          f"{'sim':>6s} {'real':>6s} {'raw':>6s} {'CPU s/mic':>9s}")
    for name, r in results.items():
        sims, real = r["sims"], r["real"]
        sim_mean = sum(sims.values()) / len(sims)
        real_mean = sum(real.values()) / len(real)
        print(f"{name:10s} {r['s_per_step']:7.3f} {r['epochs'] * TRAIN['steps_per_epoch']:6d} "
              f"{r['final_loss']:6.3f} {sims.get('t4hhb', 0):6.3f} {sims.get('t6b7n', 0):6.3f} "
              f"{sims.get('t6msm', 0):6.3f} {sim_mean:6.3f} {real_mean:6.3f} {real.get('raw', 0):6.3f} "
              f"{r['cpu_s_per_micrograph']:9.2f}")
    print("\nsim: mean zero-shot AP over the three simulated targets; real: mean AP over EMPIAR-10028 "
          "train+valid and its preprocessing variants; raw: the unprocessed images alone.")


if __name__ == "__main__":
    main()
