"""What every config shares: building from TOML/JSON dicts (unknown keys rejected) and constants used by
more than one kind of config."""

from __future__ import annotations

import dataclasses
from typing import Any, TypeVar

T = TypeVar("T")

# How a head's score threshold is calibrated on validation data (TrainConfig, FinetuneConfig).
CALIBRATION_RULES = ("f1", "precision")
# Used when a checkpoint carries no calibrated threshold for a head (a model trained outside
# `hydrapick train`): 0.5 is the natural cut of a sigmoid score; a warning says so.
FALLBACK_THRESHOLD = 0.5
# Minimum distance between picks when none is given, as a fraction of the diameter the user gives:
# particles in a monolayer touch at 1 true diameter, and users know the diameter to about +-25%, so with
# a diameter typed 1.25x too large touching particles are 0.8 given diameters apart; 0.6 still separates
# them and still merges duplicates (docs/model.md, "Diameter tolerance": it was 0.8, which lost a tenth
# of the AP at 1.25x the true diameter).
MIN_DISTANCE_FRACTION = 0.6
# Labels closer than this (micrograph pixels) in one truth or training coordinate file are one particle
# written twice (a file appended to twice, two pickers' outputs joined): no two particles' centres lie so
# close. Merged, and the count said: a doubled truth file halves recall and AP, and finetune would
# calibrate on it.
COINCIDENT_LABEL_PX = 3.0
# finetune warns when its labels number fewer than this fraction of the generic head's confident picks on
# the same micrographs: particles left unlabelled there are learnt as background.
SPARSE_LABEL_FRACTION = 0.5
# Widest Gaussian blur (model px) of the training crops' random preprocessing unless a run sets another.
# A blur of 5 px (a twelfth of the particle) already collapses a network trained up to 2.5 px, as denoised
# micrographs do (docs/model.md).
BLUR_MAX_PX = 2.5


def from_dict(cls: type[T], values: dict[str, Any], *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``values``, rejecting unknown keys with a clear message."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; "
                         f"known keys: {', '.join(sorted(names))}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in values:
            v = values[f.name]
            # TOML and JSON have no tuples; configs keep tuples so they stay hashable.
            kwargs[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict (lists for tuples) for checkpoints, manifests and JSON."""
    out = {}
    for f in dataclasses.fields(config):
        v = getattr(config, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def check_calibration(rule: str, min_precision: float) -> None:
    """Reject a calibration rule or precision that `hydrapick.training.calibration` cannot apply."""
    if not 0 < min_precision <= 1:
        raise ValueError(f"calibration_precision must be in (0, 1], got {min_precision}")
    if rule not in CALIBRATION_RULES:
        raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_RULES)}, got {rule!r}")
