"""Configuration: frozen dataclasses whose defaults live only here.

Every config rejects unknown keys (`from_dict`) so a typo in a TOML file is an error, not a silent default.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
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

    def __post_init__(self) -> None:
        if min(self.in_channels, self.stem_stride, self.body_channels, self.group_norm_groups,
               self.anchor_stride) < 1 or self.body_blocks < 0:
            raise ValueError("in_channels, stem_stride, body_channels, group_norm_groups and anchor_stride "
                             "must be >= 1, body_blocks >= 0")
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


ADAPT_OBJECTIVES = ("ignore", "count-prior")


@dataclass(frozen=True)
class TrainConfig:
    """Options of `hydrapick train` that are not file names (see docs/training.md).

    Training runs in two phases (thesis 4.3): phase 1 pretrains the body with the generic head alone on
    every dataset (Adam, cosine annealing with warm restarts); phase 2 adds one head per dataset,
    initialised from the pretrained generic head, and trains body and heads with the bias loss tying the
    generic head to them (SGD with momentum). An epoch is ``steps_per_epoch`` optimiser steps of one
    mini-batch each, not a pass over the data, so tiny and huge corpora are handled alike.
    """

    seed: int = 0
    # Data: crops in model pixels, mini-batches from one dataset at a time.
    crop_px: int = 368
    batch_size: int = 4
    steps_per_epoch: int = 100
    flips: bool = True  # random 90-degree rotations and mirror images
    any_angle: bool = False  # also random rotations by any angle (interpolates the noise)
    cache_dtype: str = "float32"  # "float16" halves the memory of the micrograph cache
    # Processes that make the coming steps' batches while the network trains (0: the main process does).
    # A GPU needs them: one core crops and augments about 60 crops per second. Same batches either way.
    loader_workers: int = 0
    # Domain randomisation (docs/method.md): particles drawn scale_min-scale_max x the size the picker is
    # told (log-uniform), and this share of crops passed through random preprocessing (blur, local
    # contrast, equalisation, gamma, 8-bit export). The defaults change nothing.
    scale_min: float = 1.0
    scale_max: float = 1.0
    preprocess_probability: float = 0.0
    blur_max_px: float = BLUR_MAX_PX  # widest Gaussian blur of the random preprocessing, model px
    # Phase 1: single-head pretraining.
    pretrain_epochs: int = 200
    pretrain_lr: float = 1e-3
    restart_epochs: int = 40  # warm restart period of the cosine schedule (thesis: 40 epochs)
    min_lr: float = 1e-6
    weight_decay: float = 0.0
    # Phase 2: multi-head training.
    multihead_epochs: int = 20
    multihead_lr: float = 1e-3
    momentum: float = 0.98  # thesis 4.3
    # Loss (thesis eq. 3.1): loc + cls_weight * cls + bias_weight * bias.
    cls_weight: float = 1.0
    bias_weight: float = 0.1
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    grad_clip: float = 10.0  # global gradient-norm clip; 0 switches it off
    # Validation, model selection and calibration.
    valid_every: int = 1  # epochs between validations (the last epoch of a phase is always validated)
    valid_tile_px: int | None = None  # validation tiles in model pixels; None: crop_px
    max_valid_tiles: int = 32  # per dataset, chosen once with the seed
    # Threshold stored with each head: "f1", the score of the best F1 on validation data; or "precision",
    # the thesis rule (lowest score whose validation precision >= calibration_precision), more
    # conservative: on the generic model it kept 0.61 of the EMPIAR-10028 ribosomes (docs/model.md).
    calibration: str = "f1"
    calibration_precision: float = 0.8
    # Checkpoints and devices.
    checkpoint_every: int = 5  # epochs
    amp: bool = True  # mixed precision: CUDA (bf16, else fp16 + loss scaling); CPUs with hardware bf16

    def __post_init__(self) -> None:
        positive = ("crop_px", "batch_size", "steps_per_epoch", "restart_epochs", "valid_every",
                    "max_valid_tiles", "checkpoint_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pretrain_epochs", "multihead_epochs", "pretrain_lr", "multihead_lr", "min_lr",
                     "weight_decay", "cls_weight", "bias_weight", "focal_gamma", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.pretrain_epochs + self.multihead_epochs < 1:
            raise ValueError("pretrain_epochs + multihead_epochs must be at least 1")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 < self.calibration_precision <= 1:
            raise ValueError(f"calibration_precision must be in (0, 1], got {self.calibration_precision}")
        if self.calibration not in CALIBRATION_RULES:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_RULES)}, "
                             f"got {self.calibration!r}")
        if self.loader_workers < 0:
            raise ValueError(f"loader_workers must be >= 0, got {self.loader_workers}")
        if self.cache_dtype not in ("float32", "float16"):
            raise ValueError(f"cache_dtype must be float32 or float16, got {self.cache_dtype!r}")
        if self.valid_tile_px is not None and self.valid_tile_px < 1:
            raise ValueError(f"valid_tile_px must be >= 1, got {self.valid_tile_px}")
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if not self.blur_max_px >= 0.4:
            raise ValueError(f"blur_max_px must be at least 0.4 (the narrowest blur drawn), "
                             f"got {self.blur_max_px}")
        if not 0 <= self.preprocess_probability <= 1:
            raise ValueError(f"preprocess_probability must be in [0, 1], got {self.preprocess_probability}")


@dataclass(frozen=True)
class AdaptConfig:
    """Options of label-free adaptation (`hydrapick pick --adapt`; see docs/method.md).

    The generic head's own picks seed a new head trained on the dataset's cached body features: its
    most confident picks (``positive_fraction`` of the particles it finds at its calibrated threshold)
    are particles, places where it finds nothing above ``uncertain_score`` are background, and the rest
    are left out of the loss. A few rounds re-seed from the new head. A self-check on ``holdout`` of the
    micrographs decides whether the new head is used.
    """

    micrographs: int = 8  # at most this many micrographs to learn from, spread over the run
    rounds: int = 2
    steps: int = 75  # head training steps per round (150 scored alike and cost twice as much: docs/model.md)
    # Small crops keep adaptation to a couple of minutes on a CPU (the head's widest block is 128
    # channels at stride 4): 4 crops of 128 px cost an eighth of 8 crops of 256 px per step.
    batch_size: int = 4
    crop_px: int = 128
    lr: float = 1e-3
    # Head blocks kept as the generic head has them (those at the body's resolution, 2 for the bundled
    # network; fewer where a network has fewer): their output is cached once per micrograph and only the
    # later blocks are trained, at 0.6x the CPU time per step and the same AP (docs/model.md).
    frozen_blocks: int = 2
    positive_fraction: float = 0.8
    uncertain_score: float = 0.05
    holdout: float = 0.25  # share of the adaptation micrographs kept for the self-check (at least 1 of 3+)
    min_recovery: float = 0.8  # the adapted head must find this share of the generic head's surest picks
    max_count_ratio: float = 2.0  # ... and pick between 1/ratio and ratio times as many particles
    min_candidate_ratio: float = 0.5  # ... and keep this share of its candidates above uncertain_score
    # Weight of the trained head against the generic one when their weights are averaged after each
    # round (weight-space ensembling, WiSE-FT): 1 keeps the trained head as it is.
    interpolation: float = 1.0
    # What the places that are neither seed particles nor confidently empty teach the head: "ignore"
    # leaves them out of the loss; "count-prior" treats every place but the seeds as unlabelled and holds
    # the number of particles predicted there to the estimate (Topaz's GE-binomial objective).
    objective: str = "ignore"
    count_weight: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.objective not in ADAPT_OBJECTIVES:
            raise ValueError(f"adapt objective must be one of {', '.join(ADAPT_OBJECTIVES)}, "
                             f"got {self.objective!r}")
        for name in ("micrographs", "rounds", "steps", "batch_size", "crop_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"adapt {name} must be >= 1, got {getattr(self, name)}")
        if self.frozen_blocks < 0:
            raise ValueError(f"adapt frozen_blocks must be >= 0, got {self.frozen_blocks}")
        for name in ("positive_fraction", "min_recovery", "interpolation", "min_candidate_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"adapt {name} must be in (0, 1], got {getattr(self, name)}")
        if not 0 <= self.uncertain_score < 1 or not 0 <= self.holdout < 1:
            raise ValueError("adapt uncertain_score and holdout must be in [0, 1)")
        if self.max_count_ratio < 1 or self.lr <= 0 or self.count_weight < 0:
            raise ValueError("adapt max_count_ratio must be >= 1, lr > 0 and count_weight >= 0")


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of `hydrapick finetune` that are not file names (see docs/training.md).

    The body and the generic head stay frozen; body features of each training micrograph are computed
    once and the new head is trained on random crops of them (Adam, cosine decay over ``steps``).
    """

    seed: int = 0
    # 150 steps of 4 crops of 256 px (4 particle diameters; ~8 passes over 5 micrographs of 4k pixels)
    # keep fine-tuning, with its 2-fold cross-validated calibration (about one extra training), within
    # a few minutes on a 2-core CPU (benchmarks/finetune_speed.py).
    steps: int = 150
    batch_size: int = 4
    crop_px: int = 256  # in model pixels; rounded down to whole anchor cells
    lr: float = 1e-3
    weight_decay: float = 0.0
    cls_weight: float = 1.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    grad_clip: float = 10.0
    # Positive-unlabelled training (label-free adaptation, objective "count-prior"): the particles given
    # are only some of those present, this many unlabelled ones per labelled one; anchors without a label
    # are held to that count (losses.count_penalty, weighted count_weight) instead of called background.
    # None: every anchor without a particle is background (or ignored near uncertain places).
    unlabelled_ratio: float | None = None
    count_weight: float = 1.0
    flips: bool = False  # also features of the 7 mirrored/rotated copies (x8 feature time and memory)
    feature_dtype: str = "float16"  # cache of body features; float16 halves its memory
    calibration: str = "f1"  # "f1" or "precision" (see TrainConfig)
    calibration_precision: float = 0.8
    # Cross-validation folds for calibration when no held-out micrographs are given; 0 or 1: no
    # cross-validation (the base model's generic threshold is kept).
    cv_folds: int = 2
    amp: bool = True

    def __post_init__(self) -> None:
        if self.cv_folds < 0:
            raise ValueError(f"cv_folds must be >= 0, got {self.cv_folds}")
        for name in ("steps", "batch_size", "crop_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "cls_weight", "focal_gamma", "grad_clip", "count_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.unlabelled_ratio is not None and not self.unlabelled_ratio >= 0:
            raise ValueError(f"unlabelled_ratio must be >= 0, got {self.unlabelled_ratio}")
        if not 0 < self.calibration_precision <= 1:
            raise ValueError(f"calibration_precision must be in (0, 1], got {self.calibration_precision}")
        if self.calibration not in CALIBRATION_RULES:
            raise ValueError(f"calibration must be one of {', '.join(CALIBRATION_RULES)}, "
                             f"got {self.calibration!r}")
        if self.feature_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"feature_dtype must be float32, float16 or bfloat16, "
                             f"got {self.feature_dtype!r}")


@dataclass(frozen=True)
class SimulationConfig:
    """Ranges the simulator draws every micrograph's conditions from (see docs/simulate.md).

    ``*_range`` fields are ``(low, high)`` and drawn uniformly (``lo == hi`` fixes the value); ``*_choices``
    fields are drawn uniformly from the tuple (repeat a value to make it more likely); ``*_probability``
    fields switch a feature on for that fraction of micrographs. One seed fixes every draw.
    """

    shape_px: tuple[int, int] = (1024, 1024)  # (rows, columns)
    # Pixel size is drawn (log-uniformly) inside this range *and* so that the particle spans
    # particle_diameter_px_range pixels; when both cannot hold, the pixel range wins.
    pixel_size_A_range: tuple[float, float] = (0.7, 6.0)
    particle_diameter_px_range: tuple[float, float] = (20.0, 140.0)
    # Microscope and CTF.
    voltage_kV_choices: tuple[float, ...] = (300.0, 300.0, 300.0, 200.0)
    cs_mm_choices: tuple[float, ...] = (2.7, 2.7, 2.7, 2.0, 1.4, 0.01)
    amplitude_contrast_range: tuple[float, float] = (0.05, 0.12)
    defocus_um_range: tuple[float, float] = (0.5, 3.5)  # underfocus
    astigmatism_um_range: tuple[float, float] = (0.0, 0.12)  # |defocus_u - defocus_v|
    phase_plate_probability: float = 0.05
    phase_shift_deg_range: tuple[float, float] = (30.0, 120.0)
    bfactor_A2_range: tuple[float, float] = (30.0, 250.0)  # envelope: motion, damage, coherence losses
    beam_divergence_mrad_range: tuple[float, float] = (0.005, 0.05)
    energy_spread_eV: float = 0.8
    cc_mm: float = 2.7
    drift_A_range: tuple[float, float] = (0.0, 6.0)  # uncorrected linear motion during the exposure
    # Exposure and detector.
    dose_e_per_A2_range: tuple[float, float] = (10.0, 60.0)
    # Detective quantum efficiency at zero frequency: older integrating cameras ~0.3, counting ~0.8.
    dqe_range: tuple[float, float] = (0.3, 0.9)
    mtf_sigma_px_range: tuple[float, float] = (0.0, 0.8)  # detector MTF as a Gaussian blur (pixels)
    # Counting detectors blur the signal but not the shot noise; integrating ones blur both.
    counting_probability: float = 0.7
    resample_sigma_px_range: tuple[float, float] = (0.0, 0.8)  # downsampling/rendering blur of everything
    binned_probability: float = 0.5  # pixel-aperture sinc of summed (binned) pixels
    energy_filter_probability: float = 0.4
    # Ice.
    ice_thickness_A_range: tuple[float, float] = (200.0, 900.0)  # never thinner than the particle + 40 Å
    ice_gradient_range: tuple[float, float] = (0.0, 0.3)  # relative peak-to-peak change across the image
    # Support film.
    carbon_probability: float = 0.25  # a hole edge with carbon film crosses the image
    carbon_thickness_A_range: tuple[float, float] = (80.0, 300.0)
    hole_radius_A_range: tuple[float, float] = (5000.0, 10000.0)
    carbon_particle_density_range: tuple[float, float] = (0.0, 1.5)  # relative to the hole
    continuous_carbon_probability: float = 0.1  # thin carbon (or graphene oxide-like) over everything
    continuous_carbon_thickness_A_range: tuple[float, float] = (20.0, 60.0)
    # Particles.
    coverage_range: tuple[float, float] = (0.03, 0.4)  # fraction of the area inside particle discs
    n_particles: int | None = None  # a fixed count of free particles instead of coverage (aggregates extra)
    max_particles: int = 800
    min_separation_range: tuple[float, float] = (0.6, 1.0)  # closest centre distance / diameter
    preferred_orientation_probability: float = 0.2
    preferred_orientation_kappa_range: tuple[float, float] = (2.0, 12.0)
    aggregate_probability: float = 0.35
    aggregates_range: tuple[int, int] = (1, 5)
    aggregate_size_range: tuple[int, int] = (3, 14)
    # Junk, contamination, blemishes.
    junk_fraction_range: tuple[float, float] = (0.0, 0.25)  # junk objects per particle
    contamination_probability: float = 0.35  # dark surface contamination (balls, specks)
    ice_crystal_probability: float = 0.15
    illumination_gradient_range: tuple[float, float] = (0.0, 0.03)
    blemish_probability: float = 0.15  # smooth dark/bright detector blemishes
    hot_pixel_probability: float = 0.3
    # Structures (when none is given).
    structure_kind: str = "random"
    structure_mass_kDa_range: tuple[float, float] | None = None  # None: the kind's own range
    n_views: int = 256  # orientations in the per-structure projection bank
    # Label policy: which placed particles are written as picks.
    label_on_carbon: bool = False  # centre over the carbon film (outside the hole)
    label_in_aggregates: bool = False
    label_on_contamination: bool = False  # centre under contamination or an ice crystal
    label_overlapping: bool = True
    overlap_fraction: float = 0.5  # centres closer than this x diameter overlap
    label_edge_margin: float = 1.0  # centre at least this x radius inside the image

    def __post_init__(self) -> None:
        if len(self.shape_px) != 2 or min(self.shape_px) < 32:
            raise ValueError(f"shape_px must be two sizes >= 32, got {self.shape_px}")
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name.endswith("_range") and v is not None:
                if len(v) != 2 or not (v[0] <= v[1]):
                    raise ValueError(f"{f.name} must be (low, high) with low <= high, got {v}")
                if v[0] < 0:
                    raise ValueError(f"{f.name} must not be negative, got {v}")
            if f.name.endswith("_probability") and not 0.0 <= v <= 1.0:
                raise ValueError(f"{f.name} must be in [0, 1], got {v}")
            if f.name.endswith("_choices") and (not v or min(v) < 0):
                raise ValueError(f"{f.name} must be a non-empty tuple of non-negative values, got {v}")
        for name in ("pixel_size_A_range", "particle_diameter_px_range", "dose_e_per_A2_range", "dqe_range",
                     "ice_thickness_A_range", "hole_radius_A_range", "min_separation_range"):
            if getattr(self, name)[0] <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if min(self.voltage_kV_choices) < 60:
            raise ValueError(f"voltage_kV_choices must be >= 60 kV, got {self.voltage_kV_choices}")
        if self.dqe_range[1] > 1:
            raise ValueError(f"dqe_range must be within (0, 1], got {self.dqe_range}")
        if self.amplitude_contrast_range[1] >= 1:
            raise ValueError(f"amplitude_contrast_range must be below 1, got {self.amplitude_contrast_range}")
        if self.n_particles is not None and self.n_particles < 0:
            raise ValueError(f"n_particles must be >= 0, got {self.n_particles}")
        if self.max_particles < 0 or self.n_views < 1:
            raise ValueError("max_particles must be >= 0 and n_views >= 1")
        if self.label_edge_margin < 0 or self.overlap_fraction < 0:
            raise ValueError("label_edge_margin and overlap_fraction must be >= 0")
