"""Apply the generic model's adoption rule to a candidate: measure it beside the shipped model, decide.

The accuracy rule (stages 4-8 and most since; every stage's rule and verdict: recipes/generic/HISTORY.md),
fixed before their figures were seen: the candidate replaces the shipped model if

  (a) the mean zero-shot AP over the simulated held-out targets (4hhb, 6b7n, 6msm) drops by no more than
      0.005 (zero-shot at the labelled diameter, picked and scored by benchmarks/harness.py), and
  (b) the mean AP over EMPIAR-10028's train and valid micrographs and their preprocessed renderings rises
      (benchmarks/renderings.py, as `benchmarks/tolerance.py --renderings all` scores them).

`--rule speed` applies the rule of a model made for speed (stage 9, recipes/generic/fast48.toml): (b)
becomes "drops by no more than 0.005", the accuracy the speed issue lets an optimisation cost.

Both models are measured in the same run. The EMPIAR-10028 test split is printed as measured and plays no
part in the decision.

    python recipes/generic/adopt.py runs/generic5/model.pt --out runs/adopt5
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import harness as h  # noqa: E402
from renderings import RENDERINGS, render  # noqa: E402

SIM_DROP_LIMIT = 0.005
REAL_DROP_LIMIT_SPEED = 0.005  # `--rule speed`: a faster model may lose this much real AP, no more


def ap(ds: h.Dataset, model: str | None, out: Path, threads: int) -> float:
    """Zero-shot AP of ``model`` (None: the shipped one) on ``ds`` at the labelled diameter."""
    result = h.run_hydrapick(ds, out, model=model, threads=threads)
    if result.error:
        raise SystemExit(result.error)
    return float(h.score(result, ds).ap)


def zero_shot(model: str | None, label: str, out: Path, threads: int) -> dict[str, float]:
    """AP per simulated held-out target, and on EMPIAR-10028's test split (reported only)."""
    sets = h.simulated_targets() + h.real_sets(["empiar-10028"], split="test")
    return {("empiar10028" if ds.name == "empiar-10028" else ds.name): ap(ds, model, out / label / ds.name,
                                                                          threads) for ds in sets}


def variants(model: str | None, label: str, out: Path, topaz_venv: Path, threads: int) -> dict[str, float]:
    """AP per rendering of EMPIAR-10028 train+valid (renderings made once, shared by both models)."""
    real = h.real_sets(["empiar-10028"], split="train,valid")[0]
    aps = {}
    for rendering in RENDERINGS:
        try:
            rds = render(real, rendering, out / "renderings" / rendering.name, topaz_venv)
        except RuntimeError as exc:
            print(f"{rendering.name}: left out: {exc}")
            continue
        aps[rendering.name] = ap(rds, model, out / label / rendering.name, threads)
    return aps


def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidate", help="model.pt of the candidate run")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/adopt")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--topaz-venv", type=Path, default=h.TOPAZ_VENV,
                        help="Topaz environment for the topaz-denoise variant (benchmarks/topaz_setup.sh)")
    parser.add_argument("--rule", choices=("accuracy", "speed"), default="accuracy",
                        help="accuracy: the real mean must rise; speed: it may drop by up to "
                             f"{REAL_DROP_LIMIT_SPEED}")
    args = parser.parse_args(argv)

    sims, real = {}, {}
    for label, model in (("shipped", None), ("candidate", args.candidate)):
        sims[label] = zero_shot(model, label, args.out / "zero_shot", args.threads)
        real[label] = variants(model, label, args.out / "variants", args.topaz_venv, args.threads)
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
