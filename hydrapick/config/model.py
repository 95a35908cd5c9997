"""The network's shape, how micrographs are brought to its scale, and picking's defaults."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the HydraPicker network and the particle scale it works at.

    The defaults are the thesis network (HydraPicker, ch. 3): a full-resolution body of 64 channels,
    two stacked 3x3 convolutions then three residual blocks of paired 3x3 convolutions, and SSD heads of
    four stride-2 blocks (128/256/512/1024 channels) giving one anchor every 16 input pixels.
    `ModelConfig.light()` is a cheaper variant (strided stem, narrower); docs/method.md compares their cost.
    """

    in_channels: int = 1
    stem_stride: int = 1  # 2 halves the body's resolution: ~4x cheaper body
    # Side of the stem's first (strided) convolution. A 3x3 kernel at stride 4 reads only 9 of every 16
    # pixels (rows and columns 2 mod 4 are never seen); 5 at stride 4 reads all of them, at a negligible
    # cost (1 input channel). Odd, so output pixel j stays centred on input pixel stride x j.
    stem_kernel: int = 3
    body_channels: int = 64
    body_blocks: int = 3
    group_norm_groups: int = 8
    head_channels: tuple[int, ...] = (128, 256, 512, 1024)
    head_dropout: float = 0.1
    prior_probability: float = 0.01  # initial particle probability of every anchor (RetinaNet)
    anchor_stride: int = 16
    # Particle diameter (= box side) in the model's pixels; micrographs are resampled to it. Above ~60 px a
    # particle's nearest anchor on the 16-px grid always overlaps it at IoU > 0.6 (docs/method.md).
    particle_diameter_px: float = 64.0
    match_iou: float = 0.6
    # Standard deviation, in the model's pixels, of a Gaussian low-pass applied after resampling and before
    # normalisation, at picking and fine-tuning alike (0: none). Part of the model, not a picking option:
    # the threshold is calibrated with it (recipes/generic/lowpass23 measures it).
    input_lowpass_px: float = 0.0

    def __post_init__(self) -> None:
        if min(self.in_channels, self.stem_stride, self.body_channels, self.group_norm_groups,
               self.anchor_stride) < 1 or self.body_blocks < 0:
            raise ValueError("in_channels, stem_stride, body_channels, group_norm_groups and anchor_stride "
                             "must be >= 1, body_blocks >= 0")
        if self.stem_kernel < 1 or self.stem_kernel % 2 == 0:
            raise ValueError(f"stem_kernel must be odd and >= 1, got {self.stem_kernel}")
        head_stride = self.anchor_stride // self.stem_stride
        if self.anchor_stride % self.stem_stride or head_stride & (head_stride - 1):
            raise ValueError(f"anchor_stride {self.anchor_stride} must be stem_stride x a power of two")
        if 2 ** len(self.head_channels) < head_stride:
            raise ValueError(
                f"{len(self.head_channels)} head blocks cannot reach stride {self.anchor_stride} "
                f"from stem stride {self.stem_stride}")
        if self.body_channels % self.group_norm_groups:
            raise ValueError("body_channels must be divisible by group_norm_groups")
        for c in self.head_channels:
            if c % self.group_norm_groups:
                raise ValueError(f"head channel count {c} must be divisible by group_norm_groups "
                                 f"{self.group_norm_groups}")
        if not 0 <= self.head_dropout < 1:
            raise ValueError(f"head_dropout must be in [0, 1), got {self.head_dropout}")
        if not 0 < self.prior_probability < 1:
            raise ValueError(f"prior_probability must be in (0, 1), got {self.prior_probability}")
        if not 0 < self.match_iou < 1:
            raise ValueError(f"match_iou must be in (0, 1), got {self.match_iou}")
        if not self.particle_diameter_px > 0:
            raise ValueError(f"particle_diameter_px must be positive, got {self.particle_diameter_px}")
        if not 0 <= self.input_lowpass_px <= self.particle_diameter_px / 4:
            raise ValueError(f"input_lowpass_px must be in [0, particle_diameter_px / 4], "
                             f"got {self.input_lowpass_px}")

    @classmethod
    def thesis(cls, **overrides: Any) -> ModelConfig:
        """The thesis network (the defaults), with any field overridden."""
        return cls(**overrides)

    @classmethod
    def light(cls, **overrides: Any) -> ModelConfig:
        """Strided stem, 32-channel body and half-width heads: about a tenth of the thesis FLOPs."""
        values: dict[str, Any] = dict(stem_stride=2, body_channels=32, head_channels=(64, 128, 256, 512))
        values.update(overrides)
        return cls(**values)


@dataclass(frozen=True)
class PreprocessConfig:
    """How micrographs are brought to the model's scale (shared by training and picking)."""

    # Percentile clipping before normalisation keeps hot pixels and carbon from dominating the scale.
    clip_percentile: float = 0.1
    # Low-pass before downsampling (anti-aliasing) is part of resampling; nothing to set.


# Picking (`hydrapick.pick`, ``hydrapick pick``): its options are function arguments and command options,
# never a config file, so their defaults are plain constants. The particle diameter and the threshold
# default to what the model's head records, the minimum distance to MIN_DISTANCE_FRACTION x diameter.
PICK_HEAD = "generic"  # the model's generic head (hydrapick.model.GENERIC_HEAD), for unseen specimens
SCORE_FLOOR = 0.05  # every candidate above this is kept in the candidates output
PICK_BATCH_SIZE = 4  # micrographs per forward pass
# Model-scale side above which inference is tiled: "auto" tiles when the network's widest activation on
# the whole micrograph would exceed TILE_ACTIVATION_BYTES (the thesis network: 2048 px; the bundled light
# network with its stride-4 stem: 5792 px), since tiling costs one extra partial pass per GroupNorm layer.
MAX_TILE_PX = "auto"
TILE_ACTIVATION_BYTES = 2**30
PREVIEW_COUNT = 3  # micrographs drawn with their picks when previews are asked for
# Particle sizes in pixels of the micrograph that hydrapick accepts, as fractions of the model's own particle
# size (particle_diameter_px; 64 px for the bundled model: 8 to 1024 px). Outside them a unit has almost
# surely slipped (nm typed as Å, a pixel size in nm), and resampling would take minutes and gigabytes.
PARTICLE_SIZE_RANGE = (1 / 8, 16.0)
# Pixels further than this many robust standard deviations from a micrograph's median (hot pixels, cosmic
# rays) are clamped before resampling, which would spread them over particle-sized patches. Shot noise
# never reaches it (a Gaussian exceeds 10 sigma once in 10^23 pixels), so ordinary micrographs are untouched.
OUTLIER_SIGMAS = 10.0
