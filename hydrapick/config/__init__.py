"""Configuration: frozen dataclasses whose defaults live only here.

Every config rejects unknown keys (`from_dict`) so a typo in a TOML file is an error, not a silent default.
One module per concept: `base` (building configs, shared constants), `model` (the network, preprocessing,
picking), `training` (training, fine-tuning, adaptation), `simulation` (the simulator).
"""

from .base import (
    BLUR_MAX_PX,
    CALIBRATION_RULES,
    COINCIDENT_LABEL_PX,
    FALLBACK_THRESHOLD,
    MIN_DISTANCE_FRACTION,
    SPARSE_LABEL_FRACTION,
    from_dict,
    to_dict,
)
from .model import (
    MAX_TILE_PX,
    OUTLIER_SIGMAS,
    PARTICLE_SIZE_RANGE,
    PICK_BATCH_SIZE,
    PICK_HEAD,
    PREVIEW_COUNT,
    SCORE_FLOOR,
    TILE_ACTIVATION_BYTES,
    ModelConfig,
    PreprocessConfig,
)
from .simulation import SimulationConfig
from .training import ADAPT_MIN_MICROGRAPHS, ADAPT_OBJECTIVES, AdaptConfig, FinetuneConfig, TrainConfig

__all__ = [
    "ADAPT_MIN_MICROGRAPHS", "ADAPT_OBJECTIVES", "BLUR_MAX_PX", "CALIBRATION_RULES", "COINCIDENT_LABEL_PX",
    "FALLBACK_THRESHOLD", "MAX_TILE_PX", "MIN_DISTANCE_FRACTION", "OUTLIER_SIGMAS", "PARTICLE_SIZE_RANGE",
    "PICK_BATCH_SIZE", "PICK_HEAD", "PREVIEW_COUNT", "SCORE_FLOOR", "SPARSE_LABEL_FRACTION",
    "TILE_ACTIVATION_BYTES", "AdaptConfig", "FinetuneConfig", "ModelConfig", "PreprocessConfig",
    "SimulationConfig", "TrainConfig", "from_dict", "to_dict",
]
