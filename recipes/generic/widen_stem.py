"""Copy a checkpoint with a wider stem kernel that computes exactly what the old one did.

The light network's first convolution is 3x3 at stride 4: output pixel j reads input pixels 4j-1..4j+1, so
the rows and columns 4j+2 are never read and 7 of every 16 model-scale pixels (their signal and their
noise alike) are thrown away before anything can average them. A 5x5 kernel at the same stride and
centring (padding 2) reads 4j-2..4j+2 and so every pixel. Its centre 3x3 is the old kernel and its outer
ring starts at zero, so the copy picks exactly as the source does; training then learns the ring:

    python recipes/generic/widen_stem.py hydrapick/weights/generic.pt 5 -o runs/generic_stem5_init.pt
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import torch

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.model import HydraPicker

STEM_WEIGHT = "body.stem.0.weight"


def widen_stem(source: Path, kernel: int, output: Path) -> Path:
    model, meta = load_checkpoint(source)
    old = model.config.stem_kernel
    if kernel % 2 == 0 or kernel <= old:
        raise SystemExit(f"the new stem kernel must be odd and wider than the source's {old}, got {kernel}")
    copy = HydraPicker(replace(model.config, stem_kernel=kernel), list(model.head_names))
    state = model.state_dict()
    weight = torch.zeros_like(copy.state_dict()[STEM_WEIGHT])
    ring = (kernel - old) // 2
    weight[:, :, ring:ring + old, ring:ring + old] = state[STEM_WEIGHT]
    state[STEM_WEIGHT] = weight
    copy.load_state_dict(state)
    # save_checkpoint sets model_config and heads from the copy; a new file gets a new creation time.
    meta = {k: v for k, v in meta.items() if k != "created"}
    meta["stem_widened_from"] = {"path": str(source), "stem_kernel": old}
    return save_checkpoint(output, copy, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("kernel", type=int, help="the new stem kernel side (odd, wider than the source's)")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    print(widen_stem(args.checkpoint, args.kernel, args.output))


if __name__ == "__main__":
    main()
