"""hydrapick: particle picking for single-particle cryo-EM with a bundled generic model.

The library is the product; the ``hydrapick`` command is a thin layer over it. Each command has one
entry point here, taking the same arguments as the command's options:

- `pick` (`hydrapick.picking.run.pick`): micrographs in, coordinate files out;
- `train` (`hydrapick.training.trainer.train`): a multi-head model from a training manifest;
- `finetune` (`hydrapick.training.finetune.finetune`): a new head from a few labelled micrographs;
- `evaluate` (`hydrapick.evaluation.files.evaluate_picks_files`): picks scored against ground truth;
- `simulate` (`hydrapick.simulation.run.simulate`): labelled synthetic micrographs.
"""

from .picks import Picks, micrograph_key
from .version import __version__

__all__ = ["Picks", "micrograph_key", "pick", "train", "finetune", "evaluate", "simulate", "__version__"]

# Entry points pull in torch; they are imported when first used so `import hydrapick` stays light.
_ENTRY_POINTS = {
    "pick": ("hydrapick.picking.run", "pick"),
    "train": ("hydrapick.training.trainer", "train"),
    "finetune": ("hydrapick.training.finetune", "finetune"),
    "evaluate": ("hydrapick.evaluation.files", "evaluate_picks_files"),
    "simulate": ("hydrapick.simulation.run", "simulate"),
}


def __getattr__(name: str):
    if name in _ENTRY_POINTS:
        import importlib

        module, attr = _ENTRY_POINTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'hydrapick' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_ENTRY_POINTS))
