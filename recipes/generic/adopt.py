"""Apply the generic model's adoption rule to a candidate: measure it beside the shipped model, decide.

The accuracy rule (stages 4-8 and most since; every stage's rule and verdict: recipes/generic/HISTORY.md),
fixed before their figures were seen: the candidate replaces the shipped model if

  (a) the mean zero-shot AP over the simulated held-out targets (4hhb, 6b7n, 6msm) drops by no more than
      0.005 (benchmarks/generic_model.py --no-finetune), and
  (b) the mean AP over EMPIAR-10028's train and valid micrographs and their preprocessed variants rises
      (benchmarks/preprocess_variants.py --split trainvalid --pickers hydrapick).

`--rule speed` applies the rule of a model made for speed (stage 9, recipes/generic/fast48.toml): (b)
becomes "drops by no more than 0.005", the accuracy the speed issue lets an optimisation cost.

Both models are measured in the same run. The EMPIAR-10028 test split is printed as measured and plays no
part in the decision.

    python recipes/generic/adopt.py runs/generic5/model.pt --out runs/adopt5
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SIM_DROP_LIMIT = 0.005
REAL_DROP_LIMIT_SPEED = 0.005  # `--rule speed`: a faster model may lose this much real AP, no more
TOPAZ_VENV = ROOT / ".venv-topaz"
TOPAZ_VARIANT = "topaz-denoise"  # rendered by Topaz itself (benchmarks/preprocess_variants.py)


def zero_shot(model: str | None, label: str, out: Path, threads: int) -> dict[str, float]:
    """AP per target, zero-shot (benchmarks/generic_model.py)."""
    command = [sys.executable, str(ROOT / "benchmarks/generic_model.py"), "--no-finetune", "--label", label,
               "--out", str(out), "--threads", str(threads)]
    if model:
        command += ["--model", model]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    rows = json.loads((out / label / "summary.json").read_text())["rows"]
    return {r["target"]: r["zero_shot"]["ap"] for r in rows}


def variants(model: str | None, out: Path, topaz_venv: Path) -> dict[str, float]:
    """AP per preprocessing variant of EMPIAR-10028 train+valid (benchmarks/preprocess_variants.py)."""
    command = [sys.executable, str(ROOT / "benchmarks/preprocess_variants.py"), "--split", "trainvalid",
               "--pickers", "hydrapick", "--out", str(out), "--topaz-venv", str(topaz_venv)]
    if model:
        command += ["--model", model]
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    aps = {}
    for summary in sorted((out / "trainvalid").glob("*/summary.json")):
        hydrapick = json.loads(summary.read_text())["pickers"]["hydrapick"]
        if hydrapick.get("scores"):
            aps[summary.parent.name] = hydrapick["scores"]["ap"]
    return aps


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", help="model.pt of the candidate run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/adopt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--topaz-venv", type=Path, default=TOPAZ_VENV,
                        help="Topaz environment for the topaz-denoise variant (benchmarks/topaz_setup.sh)")
    parser.add_argument("--rule", choices=("accuracy", "speed"), default="accuracy",
                        help="accuracy: the real mean must rise; speed: it may drop by up to "
                             f"{REAL_DROP_LIMIT_SPEED}")
    args = parser.parse_args(argv)

    sims, real = {}, {}
    for label, model in (("shipped", None), ("candidate", args.candidate)):
        sims[label] = zero_shot(model, label, args.out / "zero_shot", args.threads)
        if label == "candidate":  # the same Topaz-Denoise renderings: Topaz runs once, not per model
            rendered = args.out / "variants_shipped" / "trainvalid" / TOPAZ_VARIANT / "micrographs"
            if rendered.is_dir():
                shutil.copytree(rendered, args.out / "variants_candidate" / "trainvalid" / TOPAZ_VARIANT
                                / "micrographs", dirs_exist_ok=True)
        real[label] = variants(model, args.out / f"variants_{label}", args.topaz_venv)
    targets = [t for t in sims["shipped"] if t != "empiar10028"]
    names = sorted(set(real["shipped"]) & set(real["candidate"]))
    if set(real["shipped"]) != set(real["candidate"]):
        print(f"warning: variants scored for one model only are left out: "
              f"{sorted(set(real['shipped']) ^ set(real['candidate']))}")

    print(f"{'simulated target':<20}{'shipped':>9}{'candidate':>11}")
    for t in targets:
        print(f"{t:<20}{sims['shipped'][t]:>9.3f}{sims['candidate'][t]:>11.3f}")
    sim_shipped, sim_candidate = (mean(sims[k][t] for t in targets) for k in ("shipped", "candidate"))
    print(f"{'mean':<20}{sim_shipped:>9.3f}{sim_candidate:>11.3f}")
    print(f"\n{'train+valid variant':<20}{'shipped':>9}{'candidate':>11}")
    for v in names:
        print(f"{v:<20}{real['shipped'][v]:>9.3f}{real['candidate'][v]:>11.3f}")
    real_shipped, real_candidate = (mean(real[k][v] for v in names) for k in ("shipped", "candidate"))
    print(f"{'mean':<20}{real_shipped:>9.3f}{real_candidate:>11.3f}")
    if "empiar10028" in sims["shipped"]:
        print(f"\nEMPIAR-10028 test split (reported, not used to decide): shipped "
              f"{sims['shipped']['empiar10028']:.3f}, candidate {sims['candidate']['empiar10028']:.3f}")

    a = sim_shipped - sim_candidate <= SIM_DROP_LIMIT
    if args.rule == "speed":
        b = real_shipped - real_candidate <= REAL_DROP_LIMIT_SPEED
        need = f"may drop by {REAL_DROP_LIMIT_SPEED}"
    else:
        b = real_candidate > real_shipped
        need = "must rise"
    print(f"\n(a) simulated mean drops by {sim_shipped - sim_candidate:+.3f} (limit {SIM_DROP_LIMIT}): "
          f"{'holds' if a else 'fails'}")
    print(f"(b) real mean changes by {real_candidate - real_shipped:+.3f} ({need}): "
          f"{'holds' if b else 'fails'}")
    print("ADOPT" if a and b else "KEEP the shipped model")
    return 0


if __name__ == "__main__":
    sys.exit(main())
