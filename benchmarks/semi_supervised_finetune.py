"""Does `hydrapick finetune` gain from unlabelled micrographs beside the labelled ones? (issue 15)

For each held-out target (the simulated 4hhb, 6b7n, 6msm of recipes/generic/targets.txt and EMPIAR-10028),
in one process, with the bundled model:

- generic: the generic head, zero-shot;
- labels:  a new head fine-tuned on the target's few labelled micrographs, as `hydrapick finetune` does
           (150 steps, threshold by 2-fold cross-validation);
- semi:    then the test micrographs, without their labels, are pseudo-labelled by that head (as
           `pick --adapt` seeds: the best 0.8 x as many candidates as it finds above its threshold are
           particles, the other candidates above 0.05 are left out of the loss) and a second new head is
           trained on the labelled and pseudo-labelled micrographs together.

AP of each head on the test micrographs, scored in model pixels on whole feature maps (no edge rule, so
lower than the pick-and-evaluate figures of docs/model.md; the three columns compare like with like).

    python benchmarks/semi_supervised_finetune.py --threads 1

Adoption rule, fixed before the first run: the semi-supervised head becomes what `hydrapick finetune`
does with unlabelled micrographs if its mean AP over the four targets is at least labels-alone + 0.005 and
no target falls by more than 0.01. (Result in docs/model.md: not adopted.)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

from hydrapick.checkpoint import load_model
from hydrapick.config import AdaptConfig, FinetuneConfig
from hydrapick.training.adapt import candidates, seed
from hydrapick.training.finetune import _ap, finetune_head, load_labelled
from hydrapick.training.heads import compute_features, score_maps, train_head

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from generic_model import targets  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")
    rows = {}
    for t in targets(args.corpus, args.real):
        start = time.perf_counter()
        model, _ = load_model(None)
        mc = model.config
        train = load_labelled([str(p) for p in t["train"]], [str(t["truth"])], t["diameter_A"], mc,
                              pixel_size_A=t["apix"])
        test = load_labelled([str(p) for p in t["test"]], [str(t["truth"])], t["diameter_A"], mc,
                             pixel_size_A=t["apix"], what="test")
        config = FinetuneConfig()
        threshold, _ = finetune_head(model, "labels", train, config=config, device=device)
        test_maps = compute_features(model, test, device=device)
        names, box = [m.name for m in test_maps], mc.particle_diameter_px
        row = {head: _ap(*score_maps(model, head, test_maps, device=device), names, box)
               for head in ("generic", "labels")}
        # The same micrographs as the user's unlabelled rest of the dataset: labels dropped, pseudo-labelled
        # (the cached features are shared, only the labels differ).
        adapt = AdaptConfig()
        unlabelled = []
        for m, found in zip(test_maps, candidates(model, "labels", test_maps, adapt.uncertain_score, device),
                            strict=True):
            centres, uncertain = seed(found, int((found.score >= threshold).sum()), adapt.positive_fraction)
            unlabelled.append(replace(m, name=f"unlabelled-{m.name}", centres=centres, uncertain=uncertain))
        train_head(model, "semi", compute_features(model, train, device=device) + unlabelled, config,
                   device=device)
        row["semi"] = _ap(*score_maps(model, "semi", test_maps, device=device), names, box)
        row["seconds"] = round(time.perf_counter() - start, 1)
        rows[t["name"]] = row
        print(t["name"], json.dumps(row), flush=True)
    print(f"\n{'target':<14}{'generic':>9}{'labels':>9}{'semi':>9}")
    for name, r in rows.items():
        print(f"{name:<14}{r['generic']:>9.3f}{r['labels']:>9.3f}{r['semi']:>9.3f}")
    mean = {k: sum(r[k] for r in rows.values()) / len(rows) for k in ("generic", "labels", "semi")}
    print(f"{'mean':<14}{mean['generic']:>9.3f}{mean['labels']:>9.3f}{mean['semi']:>9.3f}")


if __name__ == "__main__":
    main()
