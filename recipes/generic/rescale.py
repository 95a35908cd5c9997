"""Copy a checkpoint with another model-scale particle size, to continue training at that scale.

The network is fully convolutional, so the same weights run at any scale; what changes is how large
micrographs are resampled for it (``particle_diameter_px``) and the box used to match anchors in training.
`hydrapick train --init` takes the model configuration from the checkpoint it starts from, so a run at a
new scale starts from a copy made here:

    python recipes/generic/rescale.py hydrapick/weights/generic.pt 48 -o runs/generic_48px_init.pt

Fewer pixels per particle is quadratically cheaper to pick (48 px: 0.56x the pixels of 64 px).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.model import HydraPicker

# Below about 40 px a particle is under 3 anchors of the 16-px grid across, and neighbours closer than
# a diameter start to share an anchor; above 128 px the network's receptive field no longer covers one.
SMALLEST_PX, LARGEST_PX = 40.0, 128.0


def rescale(source: Path, particle_px: float, output: Path) -> Path:
    if not SMALLEST_PX <= particle_px <= LARGEST_PX:
        raise SystemExit(f"particle size {particle_px} px is outside {SMALLEST_PX:g}-{LARGEST_PX:g} px")
    model, meta = load_checkpoint(source)
    config = replace(model.config, particle_diameter_px=float(particle_px))
    copy = HydraPicker(config, list(model.head_names))
    copy.load_state_dict(model.state_dict())
    # save_checkpoint sets model_config and heads from the copy; a new file gets a new creation time.
    meta = {k: v for k, v in meta.items() if k != "created"}
    meta["rescaled_from"] = {"path": str(source), "particle_diameter_px": model.config.particle_diameter_px}
    return save_checkpoint(output, copy, meta)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("particle_px", type=float, help="the new model-scale particle diameter, pixels")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    print(rescale(args.checkpoint, args.particle_px, args.output))


if __name__ == "__main__":
    main()
