"""Validation during training: fixed tiles of each dataset's validation micrographs, and per-head loss,
detections and AP on them.

The tiles are cut once per run (`validation_sets`) with a fixed seed, so every epoch is scored on the
same data; `validate_heads` computes the body features of a batch once and runs every head asked for on
them. The losses select the best epoch of each phase; the detections give the AP shown per epoch and the
calibrated score thresholds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import TrainConfig
from ..model import GENERIC_HEAD, HydraPicker
from ..model.anchors import anchor_centres, detect_picks
from ..model.losses import batch_loss, bias_loss
from ..picks import Picks
from .augment import tiles
from .datasets import TrainingDataset


@dataclass
class ValidationSet:
    """Fixed validation tiles of one dataset: images (T, 1, t, t) and particle centres per tile."""

    dataset: str
    names: list[str]
    images: torch.Tensor
    centres: list[torch.Tensor]


def validation_sets(datasets: Sequence[TrainingDataset], tile_px: int, max_tiles: int, seed: int,
                    ) -> list[ValidationSet | None]:
    """Cut each dataset's validation micrographs into tiles once (None where a dataset has none)."""
    out: list[ValidationSet | None] = []
    for d, ds in enumerate(datasets):
        names, images, centres = [], [], []
        for sample in ds.valid:
            for j, (image, c) in enumerate(tiles(sample, tile_px, seed=seed)):
                names.append(f"{sample.name}__t{j:03d}")
                images.append(image)
                centres.append(c)
        if not names:
            out.append(None)
            continue
        if len(names) > max_tiles:
            rng = np.random.default_rng([seed, d, 0x7A11])
            keep = sorted(rng.choice(len(names), size=max_tiles, replace=False).tolist())
            names, images, centres = ([x[i] for i in keep] for x in (names, images, centres))
        # T tiles of (t, t) -> (T, 1, t, t)
        out.append(ValidationSet(ds.name, names, torch.stack(images)[:, None], centres))
    return out


@dataclass
class HeadValidation:
    """Validation of one head: summed losses, positives, and (optionally) the detections."""

    loss_sum: float = 0.0
    num_pos: int = 0
    truth: list[Picks] = field(default_factory=list)
    picks: list[Picks] = field(default_factory=list)
    names: list[str] = field(default_factory=list)

    def add_detections(self, other: HeadValidation) -> None:
        """Pool ``other``'s detections and truth into this one."""
        self.truth += other.truth
        self.picks += other.picks
        self.names += other.names

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.num_pos)

    def ap(self, box_px: float) -> float:
        from ..evaluation import evaluate

        truth, picks = Picks.concat(self.truth), Picks.concat(self.picks)
        if not len(truth):
            return float("nan")
        return float(evaluate(truth, picks, box_px, micrographs=self.names).ap)


@torch.no_grad()
def validate_heads(model: HydraPicker, vset: ValidationSet, heads: Sequence[str], device: torch.device,
                   config: TrainConfig, autocast: Callable[[], contextlib.AbstractContextManager], *,
                   detections: bool = True, batch_size: int = 8) -> dict[str, HeadValidation]:
    """Loss and detections of each of ``heads`` on the tiles of ``vset`` (body features computed once,
    up to the shallowest depth any of them reads: heads with their own body blocks run those)."""
    mc = model.config
    tile = vset.images.shape[-1]
    anchors = anchor_centres(tile, tile, mc, device=device)
    out = {h: HeadValidation() for h in heads}
    depth = min((model.head_depth(h) for h in heads), default=mc.body_blocks)
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(vset.names), batch_size):
            hi = min(len(vset.names), lo + batch_size)
            x = vset.images[lo:hi].to(device)
            centres = [c.to(device) for c in vset.centres[lo:hi]]
            with autocast():
                feats = model.features(x, depth)
            for head in heads:
                with autocast():
                    outputs = model.head_forward(feats, head, depth=depth)
                parts = batch_loss(outputs, centres, anchors, mc, cls_weight=config.cls_weight,
                                   alpha=config.focal_alpha, gamma=config.focal_gamma)
                n_pos = int(parts["num_pos"])
                hv = out[head]
                hv.loss_sum += float(parts["loss"]) * max(1, n_pos)
                hv.num_pos += n_pos
                if not detections:
                    continue
                for i in range(hi - lo):
                    name = vset.names[lo + i]
                    hv.picks.append(detect_picks(outputs[i], anchors, mc, name))
                    c = centres[i].cpu().double().numpy()
                    hv.truth.append(Picks(name, c[:, 0], c[:, 1]))
                    hv.names.append(name)
    finally:
        model.train(was_training)
    return out


def validation_objective(model: HydraPicker, vsets: Sequence[ValidationSet | None],
                         heads_per_dataset: Sequence[tuple[str, list[str]]], device: torch.device,
                         config: TrainConfig, autocast: Callable[[], contextlib.AbstractContextManager], *,
                         multihead: bool, detections: bool = True) -> dict[str, Any]:
    """Validation loss of a training phase (its model-selection objective) and per-head loss and AP.

    ``heads_per_dataset[d]`` is (head trained on dataset ``d``, heads validated on it). The objective is
    the mean loss of each dataset's own head (plus the weighted bias loss in the multi-head phase);
    ``{"loss": None, "heads": {}}`` when no dataset has validation data.
    """
    box = model.config.particle_diameter_px
    heads: dict[str, Any] = {}
    generic = HeadValidation()
    own_losses, generic_losses = [], []
    for vset, (head, validated) in zip(vsets, heads_per_dataset, strict=True):
        if vset is None:
            continue
        result = validate_heads(model, vset, validated, device, config, autocast, detections=detections,
                                batch_size=max(1, 2 * config.batch_size))
        own_losses.append(result[head].loss)
        g = result[GENERIC_HEAD]
        generic_losses.append(g.loss)
        generic.loss_sum += g.loss_sum
        generic.num_pos += g.num_pos
        generic.add_detections(g)
        if multihead:
            heads[head] = {"loss": result[head].loss, **({"ap": result[head].ap(box)} if detections else {})}
        heads.setdefault(f"{GENERIC_HEAD}@{vset.dataset}", {"loss": g.loss})
    if not own_losses:
        return {"loss": None, "heads": {}}
    objective = float(np.mean(own_losses))
    if multihead and config.bias_weight > 0:
        with torch.no_grad():
            objective += config.bias_weight * float(bias_loss(model))
    heads[GENERIC_HEAD] = {"loss": float(np.mean(generic_losses)),
                           **({"ap": generic.ap(box)} if detections else {})}
    return {"loss": objective, "heads": heads}
