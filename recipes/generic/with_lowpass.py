"""Copy a checkpoint with another input low-pass (`ModelConfig.input_lowpass_px`, a Gaussian sigma in
model pixels applied after resampling, at training and at picking); the weights are unchanged.

    python recipes/generic/with_lowpass.py hydrapick/weights/generic.pt 1.0 -o runs/lp/generic_lp1.pt

Used to measure the low-pass at picking without training (the quick start's sharp, finely textured
particles score higher when blurred: issue 34) and as the --init of a stage trained with it.
"""

import argparse
from dataclasses import replace

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.model import HydraPicker

parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
parser.add_argument("checkpoint")
parser.add_argument("sigma_px", type=float)
parser.add_argument("-o", "--output", required=True)
args = parser.parse_args()
model, meta = load_checkpoint(args.checkpoint)
config = replace(model.config, input_lowpass_px=args.sigma_px)
patched = HydraPicker(config, heads=list(model.head_names))
patched.load_state_dict(model.state_dict())
derived = ("model_config", "heads", "format_version", "hydrapick_version")  # set by save_checkpoint
meta = {k: v for k, v in meta.items() if k not in derived}
meta.setdefault("notes", []).append(f"input_lowpass_px set to {args.sigma_px:g} by with_lowpass.py")
save_checkpoint(args.output, patched, meta)
print(f"{args.output}: input_lowpass_px {args.sigma_px:g}")
