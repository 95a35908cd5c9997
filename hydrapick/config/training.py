"""Training, fine-tuning and label-free adaptation."""

from __future__ import annotations

from dataclasses import dataclass

from .base import BLUR_MAX_PX, check_calibration

ADAPT_OBJECTIVES = ("ignore", "count-prior")
# The fewest micrographs adaptation learns from: one is held out for the self-check, two to learn from.
ADAPT_MIN_MICROGRAPHS = 3


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
    denoisers: bool = False  # also edge-preserving denoising and CLAHE in the random preprocessing
    spectral_tilt: bool = False  # also a random tilt of the power spectrum in the random preprocessing
    # Edge-preserving denoising and CLAHE as extra families of the random preprocessing, drawn with these
    # probabilities on top of the blur and equalisation (`denoisers` takes half of those instead).
    bilateral_probability: float = 0.0
    clahe_probability: float = 0.0
    # Chance per batch of mixing the crops' feature statistics in the body's early layers (MixStyle;
    # `hydrapick.model.body.mix_styles`), a feature-level domain randomisation. 0: never.
    mix_style: float = 0.0
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
        check_calibration(self.calibration, self.calibration_precision)
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
        for name in ("bilateral_probability", "clahe_probability", "mix_style"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")


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
    holdout: float = 0.25  # share of the adaptation micrographs kept for the self-check (at least 1)
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
        if self.micrographs < ADAPT_MIN_MICROGRAPHS:
            raise ValueError(f"adapt micrographs must be >= {ADAPT_MIN_MICROGRAPHS} (one is held out for the "
                             f"self-check), got {self.micrographs}")
        if not 0 <= self.uncertain_score < 1 or not 0 < self.holdout < 1:
            raise ValueError("adapt uncertain_score must be in [0, 1) and holdout in (0, 1) (the self-check "
                             "needs held-out micrographs)")
        if self.max_count_ratio < 1 or self.lr <= 0 or self.count_weight < 0:
            raise ValueError("adapt max_count_ratio must be >= 1, lr > 0 and count_weight >= 0")


@dataclass(frozen=True)
class FinetuneConfig:
    """Options of `hydrapick finetune` that are not file names (see docs/training.md).

    The body and the generic head stay frozen; body features of each training micrograph are computed
    once and the new head (with its own copy of the body's last ``train_body_blocks`` blocks) is trained
    on random crops of them (Adam, cosine decay over ``steps``).
    """

    seed: int = 0
    # 150 steps of 4 crops of 256 px (4 particle diameters; ~8 passes over 5 micrographs of 4k pixels)
    # keep fine-tuning, with its 2-fold cross-validated calibration (about one extra training), within
    # a few minutes on a 2-core CPU (benchmarks/finetune.py --parts finetune).
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
    # Sparse labels (fine-tuning on clicks): the labelled particles are a random subset of those present,
    # and the head learns from the non-negative PU risk (docs/method.md) instead of taking every anchor
    # without a label for background. Not switched on by itself: see docs/training.md for why.
    sparse: bool = False
    # Particles per micrograph (labelled or not) with sparse labels; None: estimated as the generic head's
    # confident picks per training micrograph over the share of the labels they find (docs/training.md).
    # Giving it implies sparse = true.
    expected_particles: float | None = None
    flips: bool = False  # also features of the 7 mirrored/rotated copies (x8 feature time and memory)
    feature_dtype: str = "float16"  # cache of body features; float16 halves its memory
    calibration: str = "f1"  # "f1" or "precision" (see TrainConfig)
    calibration_precision: float = 0.8
    # Cross-validation folds for calibration when no held-out micrographs are given; 0 or 1: no
    # cross-validation (the base model's generic threshold is kept).
    cv_folds: int = 2
    amp: bool = True
    # The new head's own copy of the body's last N residual blocks, trained with it (the shared body, and
    # so every other head, stays as it was); 0: the head alone. The copy learns at body_lr_scale x lr and
    # is pulled towards its starting weights by the L2-SP penalty body_l2sp / 2 x ||w - w0||^2 (Li et al.
    # 2018; docs/method.md). One block at the head's rate beat the head alone on the few-shot benchmark
    # (mean test AP over three sets +0.016 and +0.022 on two seeds; at 0.1 x lr, +0.004; docs/training.md).
    train_body_blocks: int = 1
    body_lr_scale: float = 1.0
    body_l2sp: float = 0.01

    def __post_init__(self) -> None:
        if self.cv_folds < 0:
            raise ValueError(f"cv_folds must be >= 0, got {self.cv_folds}")
        if self.train_body_blocks < 0:
            raise ValueError(f"train_body_blocks must be >= 0, got {self.train_body_blocks}")
        for name in ("steps", "batch_size", "crop_px"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("lr", "weight_decay", "cls_weight", "focal_gamma", "grad_clip", "count_weight",
                     "body_lr_scale", "body_l2sp"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.expected_particles is not None and not self.expected_particles > 0:
            raise ValueError(f"expected_particles must be > 0, got {self.expected_particles}")
        if self.unlabelled_ratio is not None and not self.unlabelled_ratio >= 0:
            raise ValueError(f"unlabelled_ratio must be >= 0, got {self.unlabelled_ratio}")
        check_calibration(self.calibration, self.calibration_precision)
        if self.feature_dtype not in ("float32", "float16", "bfloat16"):
            raise ValueError(f"feature_dtype must be float32, float16 or bfloat16, "
                             f"got {self.feature_dtype!r}")
