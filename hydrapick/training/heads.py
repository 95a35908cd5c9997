"""A new head trained alone on cached body features: fine-tuning (labelled) and adaptation (unlabelled).

The body is frozen, so its features are computed once per micrograph (the whole micrograph at the
model's scale, as picking sees it) and the head is trained on random crops of the cached feature maps.
Crops start on whole anchor cells, so the head's stride-2 grid and the anchors line up exactly as they do
when the head later runs on a full micrograph. A step then costs only the head.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import FinetuneConfig, ModelConfig
from ..device import autocast_for
from ..model import GENERIC_HEAD, HydraPicker
from ..model.anchors import anchor_centres, build_targets, detect_picks
from ..model.head import LAYERS_PER_BLOCK, full_resolution_blocks
from ..model.losses import (
    batch_loss,
    count_penalty,
    detection_loss,
    ignore_mask,
    localisation_loss,
    non_negative_pu_loss,
)
from ..picks import Picks
from .augment import dihedral
from .datasets import MicrographSample
from .errors import FinetuneError
from .events import ProgressCallback, TrainEvent
from .sampler import step_seed


@dataclass
class FeatureMap:
    """Cached body features of one micrograph (or one of its mirrored/rotated copies).

    ``features`` (C, h, w) at the body's stride; ``centres`` (P, 2) particle centres (x, y) in model
    pixels; ``shape`` the model-scale image size (H, W) the features came from. ``uncertain`` (U, 2)
    are places that may or may not hold a particle (label-free adaptation): anchors within half a
    particle diameter of one are left out of the classification loss instead of counted as background.
    ``start_block`` k > 0: the features are the generic head's first k blocks' output (`Head.trunk`),
    valid for the generic head and heads copied from it whose first k blocks stay frozen. ``depth``: the
    shared body blocks the features have passed (None: all), as `HydraPicker.head_forward` takes it.
    """

    name: str
    features: torch.Tensor
    centres: torch.Tensor
    shape: tuple[int, int]
    uncertain: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 2)))
    start_block: int = 0
    depth: int | None = None



# --- features ---------------------------------------------------------------------------------------

@torch.no_grad()
def compute_features(model: HydraPicker, samples: Sequence[MicrographSample], *, device: torch.device,
                     flips: bool = False, dtype: torch.dtype = torch.float16, frozen_blocks: int = 0,
                     depth: int | None = None, progress: ProgressCallback | None = None,
                     trunk_head: str = GENERIC_HEAD) -> list[FeatureMap]:
    """Body features of whole micrographs, once (and of their 7 other dihedral copies with ``flips``).

    With ``frozen_blocks`` k the cached features are those after the first k blocks of head ``trunk_head``
    (the generic one by default), which must keep the body's resolution (stride 1), so that training a
    head copied from it costs only its later blocks. With ``depth`` d they are the shared body's after its
    first d residual blocks (a head that trains its own copy of the later ones starts there). Features
    are kept on ``device`` when it is a GPU, else in CPU memory, in ``dtype``.
    """
    if not 0 <= frozen_blocks <= full_resolution_blocks(model.config):
        raise ValueError(f"frozen_blocks must be 0-{full_resolution_blocks(model.config)} (head blocks at "
                         f"the body's resolution), got {frozen_blocks}")
    if depth is not None and frozen_blocks:
        raise ValueError("features are cached after some body blocks (depth) or after head blocks "
                         "(frozen_blocks), not both")
    model.eval()
    autocast, _ = autocast_for(device, True)
    store = device if device.type == "cuda" else torch.device("cpu")
    variants = [(k, f) for f in (False, True) for k in range(4)] if flips else [(0, False)]
    out = []
    total = len(samples) * len(variants)
    for i, sample in enumerate(samples):
        for j, (k, flip) in enumerate(variants):
            image, centres = dihedral(sample.image.float(), sample.centres, k, flip)
            with autocast():
                # (H, W) -> (1, 1, H, W) -> features (1, C, h, w) -> (C, h, w)
                feats = model.features(image.to(device)[None, None], depth)
                if frozen_blocks:
                    feats = model.heads[trunk_head].trunk(feats, frozen_blocks)
            out.append(FeatureMap(f"{sample.name}#{k}{'f' if flip else ''}", feats[0].to(store, dtype),
                                  centres, (int(image.shape[0]), int(image.shape[1])),
                                  start_block=frozen_blocks, depth=depth))
            if progress is not None:
                progress(TrainEvent(kind="features", step=i * len(variants) + j + 1, steps=total,
                                    message=sample.name))
    return out


def crop_cells(maps: Sequence[FeatureMap], crop_px: int, config: ModelConfig) -> int:
    """Side of the feature crops in feature cells: whole anchor cells, no larger than any map."""
    cell = config.anchor_stride // config.stem_stride
    want = max(1, crop_px // config.anchor_stride) * cell
    smallest = min(min(m.features.shape[-2:]) for m in maps)
    fit = (smallest // cell) * cell
    if fit < cell:
        raise FinetuneError(f"micrographs are too small for the model: a feature map of {smallest} cells "
                            f"holds no whole anchor cell of {cell}")
    return min(want, fit)


def _inside_crop(points: torch.Tensor, x0: int, y0: int, size_px: int) -> torch.Tensor:
    """``points`` (P, 2) shifted to a crop starting at input pixel (x0, y0), those inside it kept."""
    c = points - torch.tensor([x0, y0], dtype=torch.float32)
    keep = (c[:, 0] >= -0.5) & (c[:, 0] < size_px - 0.5) & (c[:, 1] >= -0.5) & (c[:, 1] < size_px - 0.5)
    return c[keep]


def feature_batch(maps: Sequence[FeatureMap], indices: Sequence[int], cells: int, config: ModelConfig,
                  rng: np.random.Generator) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Random aligned crops ``(N, C, cells, cells)``, and the particle centres and uncertain places in
    each crop's input pixels."""
    s, cell = config.stem_stride, config.anchor_stride // config.stem_stride
    size_px = cells * s
    crops, centres, uncertain = [], [], []
    for i in indices:
        m = maps[i]
        h, w = m.features.shape[-2:]
        fy = cell * int(rng.integers(0, (h - cells) // cell + 1))
        fx = cell * int(rng.integers(0, (w - cells) // cell + 1))
        crops.append(m.features[:, fy:fy + cells, fx:fx + cells])
        # Feature cell j sits on input pixel s * j, so a crop at cell fx starts at input pixel s * fx.
        centres.append(_inside_crop(m.centres, fx * s, fy * s, size_px))
        uncertain.append(_inside_crop(m.uncertain, fx * s, fy * s, size_px))
    return torch.stack(crops), centres, uncertain


# --- training one head -------------------------------------------------------------------------------

def train_head(model: HydraPicker, name: str, maps: Sequence[FeatureMap], config: FinetuneConfig, *,
               device: torch.device, progress: ProgressCallback | None = None, phase: str = "finetune",
               share: float | None = None, init_from: str = GENERIC_HEAD) -> list[float]:
    """Add head ``name`` (a copy of head ``init_from``, the generic one by default) and train it alone on
    ``maps``.

    On maps cached after the head's first k blocks (``start_block`` k) only the later blocks are trained.
    With ``config.train_body_blocks`` N the head gets its own copy of the body's last N blocks
    (`Head.body_tail`), trained too on maps cached before them (``depth`` = body blocks - N), at
    ``body_lr_scale`` x the learning rate and pulled towards their starting weights by the L2-SP
    penalty (`l2_sp`, weight ``body_l2sp``).
    ``share``: the labels are sparse, and this fraction of the anchors without a label are particle
    anchors (`unlabelled_share`); the head then learns from the non-negative PU risk
    (`sparse_label_loss`) instead of taking every anchor without a label for background.
    Returns the loss of every step.
    """
    if name in model.heads:
        raise FinetuneError(f"head '{name}' already exists in the model")
    mc = model.config
    start, depth = maps[0].start_block, maps[0].depth
    if any(m.start_block != start or m.depth != depth for m in maps):
        raise FinetuneError("feature maps cached after different numbers of body or head blocks")
    tail_blocks = config.train_body_blocks
    if tail_blocks and (start or (mc.body_blocks if depth is None else depth) > mc.body_blocks - tail_blocks):
        raise FinetuneError(f"training the body's last {tail_blocks} block(s) needs features cached "
                            f"before them (compute_features depth={mc.body_blocks - tail_blocks})")
    try:
        model.add_head(name, init_from=init_from, body_tail_blocks=tail_blocks)
    except ValueError as exc:
        raise FinetuneError(str(exc)) from None
    for p in model.parameters():
        p.requires_grad_(False)
    head = model.heads[name]
    head.to(device)
    params = [*head.blocks[start * LAYERS_PER_BLOCK:].parameters(), *head.output.parameters()]
    tail = list(head.body_tail.parameters())
    for p in params + tail:
        p.requires_grad_(True)
    # The tail has its own optimiser and schedule (a fraction of the head's learning rate throughout);
    # without one, the head's training is exactly what it was before tails existed.
    optimizers = [adam(params, lr=config.lr, weight_decay=config.weight_decay)]
    if tail:
        optimizers.append(adam(tail, lr=config.lr * config.body_lr_scale, weight_decay=config.weight_decay))
    schedulers = [torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=config.steps,
                                                             eta_min=o.param_groups[0]["lr"] * 0.01)
                  for o in optimizers]
    start_weights = [p.detach().clone() for p in tail]
    autocast, scaler = autocast_for(device, config.amp)
    cells = crop_cells(maps, config.crop_px, mc)
    anchors = anchor_centres(cells * mc.stem_stride, cells * mc.stem_stride, mc, device=device)
    rng = np.random.default_rng([config.seed, 0xF17E])
    head.train()
    losses = []
    report_every = max(1, config.steps // 50)
    for step in range(config.steps):
        indices = rng.integers(0, len(maps), size=config.batch_size)
        feats, centres, uncertain = feature_batch(maps, indices.tolist(), cells, mc, rng)
        feats = feats.to(device).float()
        centres = [c.to(device) for c in centres]
        ignore = ignore_mask(anchors, uncertain, 0.5 * mc.particle_diameter_px)
        torch.manual_seed(step_seed((config.seed, step)))
        with autocast():
            outputs = model.head_forward(feats, name, start, depth)
        if share is not None:
            parts = sparse_label_loss(outputs, centres, anchors, mc, config, share)
        elif config.unlabelled_ratio is None:
            parts = batch_loss(outputs, centres, anchors, mc, cls_weight=config.cls_weight,
                               alpha=config.focal_alpha, gamma=config.focal_gamma, ignore=ignore)
        else:
            parts = positive_unlabelled_loss(outputs, centres, anchors, mc, config)
        loss = parts["loss"]
        if tail and config.body_l2sp > 0:
            loss = loss + l2_sp(tail, start_weights, config.body_l2sp)
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if config.grad_clip > 0:
            for optimizer in optimizers:
                scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params + tail, config.grad_clip)
        for optimizer, scheduler in zip(optimizers, schedulers, strict=True):
            scaler.step(optimizer)
            scheduler.step()
        scaler.update()
        losses.append(float(parts.get("value", parts["loss"]).detach()))
        if not math.isfinite(losses[-1]):
            raise FinetuneError(f"fine-tuning diverged at step {step + 1} (loss {losses[-1]}); lower the "
                                "learning rate")
        if progress is not None and ((step + 1) % report_every == 0 or step + 1 == config.steps):
            progress(TrainEvent(kind="step", phase=phase, step=step + 1, steps=config.steps,
                                values={"loss": float(np.mean(losses[-report_every:]))}))
    for p in head.parameters():
        p.requires_grad_(False)
    head.eval()
    return losses


def l2_sp(params: Sequence[torch.Tensor], start: Sequence[torch.Tensor], alpha: float) -> torch.Tensor:
    """The L2-SP penalty (Li et al., ICML 2018): ``alpha / 2 * sum ||w - w0||^2`` over ``params``, each
    pulled towards its starting value in ``start`` (the pretrained weights) rather than towards 0."""
    return 0.5 * alpha * sum(((p - p0) ** 2).sum() for p, p0 in zip(params, start, strict=True))


def positive_unlabelled_loss(outputs: torch.Tensor, centres: Sequence[torch.Tensor], anchors: torch.Tensor,
                             mc: ModelConfig, config: FinetuneConfig) -> dict[str, torch.Tensor]:
    """Loss of a batch whose particles are only some of those present (label-free adaptation's seeds).

    Labelled particles give the focal and localisation losses as in fine-tuning; every other anchor is
    unlabelled, neither particle nor background, and only their predicted count is held to the prior:
    ``unlabelled_ratio`` unlabelled particles per labelled one (`count_penalty`, weight ``count_weight``).
    """
    labels, offsets, positive = build_targets(anchors, list(centres), mc)
    parts = detection_loss(outputs.float(), labels, offsets, positive, cls_weight=config.cls_weight,
                           alpha=config.focal_alpha, gamma=config.focal_gamma,
                           ignore=torch.ones_like(positive))
    unlabelled = ~positive
    # The share of unlabelled anchors that are particles: a few anchors per particle, as many per
    # unlabelled particle as per labelled one. Bounded away from 0 and 1, where the binomial is degenerate.
    share = config.unlabelled_ratio * float(positive.sum()) / max(1, int(unlabelled.sum()))
    penalty = count_penalty(outputs[..., 2][unlabelled], min(max(share, 1e-3), 0.5))
    parts["count"] = penalty
    parts["loss"] = parts["loss"] + config.count_weight * penalty
    return parts


def sparse_label_loss(outputs: torch.Tensor, centres: Sequence[torch.Tensor], anchors: torch.Tensor,
                      mc: ModelConfig, config: FinetuneConfig, share: float) -> dict[str, torch.Tensor]:
    """Loss of a batch whose labelled particles are a random subset of those present (fine-tuning on
    sparse clicks): the non-negative PU risk (`non_negative_pu_loss`) for the classification, and the
    localisation loss of the labelled particles only (the offsets of the others are unknown).

    ``loss`` is what to minimise this step; ``value`` the risk estimate to report.
    """
    _, offsets, positive = build_targets(anchors, list(centres), mc)
    outputs = outputs.float()
    objective, value = non_negative_pu_loss(outputs[..., 2], positive, ~positive, share,
                                            alpha=config.focal_alpha, gamma=config.focal_gamma)
    loc = localisation_loss(outputs[..., :2], offsets, positive) / positive.sum().clamp(min=1)
    return {"loss": loc + config.cls_weight * objective, "value": loc.detach() + config.cls_weight * value,
            "cls": value, "loc": loc, "num_pos": positive.sum()}


def unlabelled_share(maps: Sequence[FeatureMap], mc: ModelConfig, expected_per_micrograph: float) -> float:
    """Fraction of the anchors without a label that are particle anchors, when each map holds
    ``expected_per_micrograph`` particles of which only its ``centres`` are labelled.

    Unlabelled particles are taken to cover as many anchors each as the labelled ones do (a random
    subset of the same particles). 0 when the labels already number the expected particles.
    """
    labelled = particle_anchors = other_anchors = 0
    for m in maps:
        anchors = anchor_centres(m.shape[0], m.shape[1], mc)
        _, _, positive = build_targets(anchors, [m.centres], mc)
        labelled += len(m.centres)
        particle_anchors += int(positive.sum())
        other_anchors += int((~positive).sum())
    missing = max(0.0, expected_per_micrograph * len(maps) - labelled)
    if not labelled or not other_anchors:
        return 0.0
    return min(0.5, missing * (particle_anchors / labelled) / other_anchors)


@torch.no_grad()
def score_maps(model: HydraPicker, head: str, maps: Sequence[FeatureMap], *, device: torch.device,
               ) -> tuple[Picks, Picks]:
    """(truth, picks) in model pixels of ``head`` run on each whole feature map."""
    mc = model.config
    model.eval()
    autocast, _ = autocast_for(device, True)
    truths, picks = [], []
    for m in maps:
        with autocast():
            outputs = model.head_forward(m.features[None].to(device).float(), head, m.start_block,
                                         m.depth)[0]
        anchors = anchor_centres(m.shape[0], m.shape[1], mc, device=device)
        picks.append(detect_picks(outputs, anchors, mc, m.name))
        c = m.centres.double().numpy()
        truths.append(Picks(m.name, c[:, 0], c[:, 1]))
    return Picks.concat(truths), Picks.concat(picks)


def adam(params: list[torch.nn.Parameter], **kwargs: Any) -> torch.optim.Adam:
    """Adam, fused into one kernel where this torch supports it (several times faster on a CPU)."""
    try:
        return torch.optim.Adam(params, fused=True, **kwargs)
    except (RuntimeError, TypeError):  # torch < 2.4 has no fused CPU Adam
        return torch.optim.Adam(params, **kwargs)


