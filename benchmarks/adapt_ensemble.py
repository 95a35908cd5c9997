"""Does `pick --adapt` do better if it averages the adapted head with the generic head? (issue 15)

Label-free adaptation trains a new head on the generic head's own surest picks. With the stage-11 model
that head alone loses on every simulated target (docs/model.md), and nothing without labels can tell
whether it re-ranked the uncertain candidates for better or worse. Averaging the two heads' outputs (the
particle probabilities and the offsets, anchor by anchor) is the cautious form: an ensemble of two
different heads is rarely worse than the weaker one and often better than both.

For each dataset, in one process, with the bundled model, adapting on the micrographs being scored
without their labels (as `hydrapick pick --adapt` does):

- generic:  the generic head, zero-shot;
- adapted:  what `--adapt` picks with now (the adapted head, or the generic head where the self-check
            rejected it);
- averaged: the mean of the generic and adapted heads' outputs (the generic head where rejected).

AP is scored in model pixels on whole feature maps (no edge rule, so lower than the pick-and-evaluate
figures of docs/model.md; the columns compare like with like). The self-check's figures are printed too.

    python benchmarks/adapt_ensemble.py --threads 2

Adoption rule, fixed before the first run: averaging becomes what `pick --adapt` does if, on the two
datasets kept for choosing adaptation settings (6b7n and EMPIAR-10028 train+valid, as in docs/model.md),
its mean AP is above both the generic head's and the adapted head's. The other datasets are reported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from hydrapick.checkpoint import load_model
from hydrapick.evaluation import evaluate
from hydrapick.model import GENERIC_HEAD
from hydrapick.model.anchors import anchor_centres, detect_picks
from hydrapick.picks import Picks
from hydrapick.training.adapt import ADAPTED_HEAD, adapt
from hydrapick.training.finetune import load_labelled
from hydrapick.training.heads import FeatureMap, compute_features

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from generic_model import targets  # noqa: E402

CHOOSING = ("t6b7n", "empiar10028-trainvalid")


def averaged_outputs(outputs: list[torch.Tensor]) -> torch.Tensor:
    """Raw [dx, dy, logit] outputs of several heads -> one: mean offsets, logit of the mean probability."""
    stacked = torch.stack([o.float() for o in outputs])
    p = torch.sigmoid(stacked[..., 2]).mean(0).clamp(1e-6, 1 - 1e-6)
    return torch.cat([stacked[..., :2].mean(0), torch.log(p / (1 - p))[..., None]], dim=-1)


@torch.no_grad()
def ap_of(model, heads: list[str], maps: list[FeatureMap]) -> float:
    """AP of the heads' averaged outputs (one head: its own) on whole feature maps, in model pixels."""
    mc = model.config
    model.eval()
    truths, picks = [], []
    for m in maps:
        feats = m.features[None].float()
        outputs = averaged_outputs([model.head_forward(feats, h, m.start_block)[0] for h in heads])
        picks.append(detect_picks(outputs, anchor_centres(m.shape[0], m.shape[1], mc), mc, m.name))
        c = m.centres.double().numpy()
        truths.append(Picks(m.name, c[:, 0], c[:, 1]))
    return float(evaluate(Picks.concat(truths), Picks.concat(picks), mc.particle_diameter_px,
                          micrographs=[m.name for m in maps]).ap)


def datasets(corpus: Path, real: Path) -> list[dict]:
    """The simulated targets' and EMPIAR-10028's test micrographs, and EMPIAR-10028 train+valid."""
    out = []
    for t in targets(corpus, real):
        out.append(dict(name=t["name"], mics=t["test"], truth=t["truth"], diameter_A=t["diameter_A"],
                        apix=t["apix"]))
        if t["valid"]:
            out.append(dict(name=f"{t['name']}-trainvalid", mics=t["train"] + t["valid"], truth=t["truth"],
                            diameter_A=t["diameter_A"], apix=t["apix"]))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--model", help="checkpoint (default: the bundled generic model)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    rows = {}
    for d in datasets(args.corpus, args.real):
        start = time.perf_counter()
        model, meta = load_model(args.model)
        samples = load_labelled([str(p) for p in d["mics"]], [str(d["truth"])], d["diameter_A"],
                                model.config, pixel_size_A=d["apix"], what="test")
        result = adapt(model, meta, [(s.source, s.name, s.pixel_size_A) for s in samples], d["diameter_A"],
                       device=device)
        maps = compute_features(model, samples, device=device)
        row = {"generic": ap_of(model, [GENERIC_HEAD], maps)}
        row["adapted"] = ap_of(model, [result.head], maps)
        row["averaged"] = ap_of(model, sorted({GENERIC_HEAD, result.head}), maps)
        row["kept"] = result.kept
        row["self_check"] = result.report.get("self_check", {})
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[d["name"]] = row
        print(d["name"], json.dumps(row), flush=True)
        assert result.kept == (ADAPTED_HEAD in model.heads)

    print(f"\n{'dataset':<24}{'generic':>9}{'adapted':>9}{'averaged':>9}  kept  self-check")
    for name, r in rows.items():
        sc = {k: r["self_check"].get(k, float("nan")) for k in ("seed_recovery", "count_ratio",
                                                                 "candidate_ratio")}
        print(f"{name:<24}{r['generic']:>9.3f}{r['adapted']:>9.3f}{r['averaged']:>9.3f}  "
              f"{'yes' if r['kept'] else 'no ':<4}  recovery {sc['seed_recovery']:.2f}, "
              f"count {sc['count_ratio']:.2f}, candidates {sc['candidate_ratio']:.2f}")
    chosen = [rows[n] for n in CHOOSING if n in rows]
    if len(chosen) == len(CHOOSING):
        mean = {k: sum(r[k] for r in chosen) / len(chosen) for k in ("generic", "adapted", "averaged")}
        print(f"\nchoosing sets ({', '.join(CHOOSING)}): generic {mean['generic']:.3f}, adapted "
              f"{mean['adapted']:.3f}, averaged {mean['averaged']:.3f}")
        adopt = mean["averaged"] > max(mean["generic"], mean["adapted"])
        print("ADOPT averaging" if adopt else "KEEP the adapted head as it is")


if __name__ == "__main__":
    main()
