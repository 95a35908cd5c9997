"""Copy a model with a fixed Gaussian low-pass at its input (`ModelConfig.input_lowpass_px`), weights unchanged.

The copy keeps the source's threshold; recalibrate it with a learning-rate-0 pass (recipes/generic/
lowpass23/README.md) before shipping. AP does not depend on the threshold, so adopt.py can measure the
copy as it is.

    python recipes/generic/with_lowpass.py hydrapick/weights/generic.pt --sigma 1.0 -o runs/lowpass23/s1.0.pt
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hydrapick.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--sigma", type=float, required=True, help="low-pass sigma in the model's pixels")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    model, meta = load_checkpoint(args.model)
    model.config = dataclasses.replace(model.config, input_lowpass_px=args.sigma)  # checks the range
    meta = dict(meta)
    meta["lowpass_from"] = str(args.model)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output, model, meta)
    print(f"wrote {args.output} (input_lowpass_px {args.sigma:g})")


if __name__ == "__main__":
    main()
