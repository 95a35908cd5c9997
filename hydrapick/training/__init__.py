"""Training hydrapick models: `train` (multi-head training from a manifest) and `finetune` (a new head).

Modules: `manifest` (the training manifest, read and resolved), `datasets` (the model-scale cache),
`augment`, `sampler`, `trainer` (`train`), `config_file` (its ``--config`` file), `validation`,
`calibration`, `resume`, `finetune`, `distributed` (torchrun processes), `events` (progress events and the
run's log).
"""

from .config_file import read_config_file
from .errors import FinetuneError, TrainingError
from .events import ProgressCallback, TrainEvent
from .finetune import FinetuneResult, finetune
from .manifest import ManifestError, read_manifest
from .trainer import PHASES, TrainResult, train

__all__ = ["FinetuneError", "FinetuneResult", "ManifestError", "PHASES", "ProgressCallback", "TrainEvent",
           "TrainResult", "TrainingError", "finetune", "read_config_file", "read_manifest", "train"]
