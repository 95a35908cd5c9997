"""Average the weights of two bundled generic models (a model soup) into a checkpoint `train --init` takes.

Stage 5 recovered denoised micrographs but lost accuracy on raw simulated ones; the shipped stage 3 is
the other way round. Both descend from the same training run (stage 5 from stage 4 from stage 3), and
averaging the weights of a model with a fine-tuned descendant often keeps most of what each does well
(WiSE-FT: Wortsman et al., CVPR 2022; model soups: Wortsman et al., ICML 2022).

    python recipes/generic/soup.py hydrapick/weights/generic.pt recipes/generic/stage5/generic.pt \
        --weight 0.5 -o runs/soup/init.pt
    hydrapick train recipes/generic/corpus.toml --config recipes/generic/soup.toml \
        --init runs/soup/init.pt --threads 2 -o runs/soup/run
    python recipes/generic/adopt.py runs/soup/run/model.pt ...

The second command changes no weight (learning rate 0): it only calibrates the averaged model's
threshold on the corpus's validation tiles, as every stage's threshold is calibrated.

Adoption rule, fixed before any figure of the soup was looked at: the rule of stages 4-6
(`recipes/generic/mixed.toml`), weight 0.5 chosen beforehand and not tuned. If stage 6 passes its own
rule too, the one with the higher mean over EMPIAR-10028 train+valid and its variants is adopted.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.model import GENERIC_HEAD


def soup(first: Path, second: Path, weight: float):
    """``weight`` x the second model's weights + (1 - ``weight``) x the first's; the first's metadata."""
    a, meta = load_checkpoint(first)
    b, _ = load_checkpoint(second)
    if a.config != b.config:
        raise SystemExit(f"{first} and {second} are different networks; their weights cannot be averaged")
    parts = (lambda m: m.body, lambda m: m.heads[GENERIC_HEAD])
    with torch.no_grad():
        for part in parts:
            for p, q in zip(part(a).parameters(), part(b).parameters(), strict=True):
                p.mul_(1 - weight).add_(q.float(), alpha=weight)
    meta = dict(meta)
    meta["soup"] = {"first": str(first), "second": str(second), "weight_of_second": weight}
    return a, meta


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--weight", type=float, default=0.5, help="weight of the second model")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    if not 0 <= args.weight <= 1:
        raise SystemExit("--weight must be in [0, 1]")
    model, meta = soup(args.first, args.second, args.weight)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output, model, meta)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
