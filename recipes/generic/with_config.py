"""Copy a model with some `ModelConfig` fields changed that add no weights, the weights unchanged.

For settings of how the network computes rather than what it learned: `input_lowpass_px` (stage 23,
recipes/generic/lowpass23) and, once recipes/generic/localnorm25/norm_window.patch is applied,
`norm_window_px` (stage 25). The copy keeps
the source's threshold; a learning-rate-0 training pass recalibrates it. AP does not depend on the
threshold, so adopt.py can measure the copy as it is.

    python recipes/generic/with_config.py hydrapick/weights/generic.pt --set input_lowpass_px=1 \
        -o runs/lowpass23/s1.0.pt
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.config import ModelConfig
from hydrapick.model import HydraPicker

# Fields that change how the network computes, not its weights; those this hydrapick's ModelConfig has.
SETTABLE = tuple(f.name for f in dataclasses.fields(ModelConfig)
                 if f.name in ("input_lowpass_px", "norm_window_px"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--set", action="append", required=True, metavar="FIELD=VALUE",
                        help=f"one of {', '.join(SETTABLE)}; may be repeated")
    parser.add_argument("-o", "--output", type=Path, required=True)
    args = parser.parse_args()
    changes = {}
    for item in args.set:
        field, _, value = item.partition("=")
        if field not in SETTABLE or not value:
            raise SystemExit(f"--set takes FIELD=VALUE with FIELD one of {', '.join(SETTABLE)}, got {item!r}")
        changes[field] = float(value)
    model, meta = load_checkpoint(args.model)
    config = dataclasses.replace(model.config, **changes)  # checks the ranges
    copy = HydraPicker(config, model.head_names)  # rebuilt, so the layers are made for the new setting
    copy.load_state_dict(model.state_dict())
    meta = dict(meta)
    meta["config_changed_from"] = {"model": str(args.model), **changes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.output, copy.eval(), meta)
    print(f"wrote {args.output} ({', '.join(f'{k} {v:g}' for k, v in changes.items())})")


if __name__ == "__main__":
    main()
