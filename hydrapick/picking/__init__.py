"""Picking: micrographs in, `Picks` out, and whole runs that write a run's files.

- `engine`: `pick_micrographs`, the engine (read ahead, batch, run the network, decode), one `PickResult`
  per micrograph;
- `inference`: the network over prepared micrographs, whole, tiled or averaged over symmetries (TTA);
- `outputs`: where a run's files go and how they are written, previews;
- `run`: `pick`, the whole ``hydrapick pick`` command as a library function, returning a `PickReport`;
- `shards`: SLURM array shards of the input list.

The model to pick with is loaded by `hydrapick.checkpoint.load_model` (re-exported here).
"""

from ..checkpoint import load_model
from .engine import pick_micrographs, resolve_diameter, resolve_threshold
from .outputs import PICK_FORMATS, output_format
from .results import PickError, PickResult
from .run import PickProgress, PickReport, pick
from .shards import parse_shard, select_shard, shard_from_environment

__all__ = [
    "PICK_FORMATS", "PickError", "PickProgress", "PickReport", "PickResult", "load_model", "output_format",
    "parse_shard", "pick", "pick_micrographs", "resolve_diameter", "resolve_threshold", "select_shard",
    "shard_from_environment",
]
