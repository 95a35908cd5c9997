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

import numpy as np
import torch

from .config import TrainConfig
from .data import TrainingDataset, tiles
from .model import HydraPicker
from .model.anchors import anchor_centres, detect
from .model.losses import batch_loss
from .picks import Picks


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

    @property
    def loss(self) -> float:
        return self.loss_sum / max(1, self.num_pos)

    def ap(self, box_px: float) -> float:
        from .evaluation import evaluate

        truth, picks = Picks.concat(self.truth), Picks.concat(self.picks)
        if not len(truth):
            return float("nan")
        return float(evaluate(truth, picks, box_px, micrographs=self.names).ap)


@torch.no_grad()
def validate_heads(model: HydraPicker, vset: ValidationSet, heads: Sequence[str], device: torch.device,
                   config: TrainConfig, autocast: Callable[[], contextlib.AbstractContextManager], *,
                   detections: bool = True, batch_size: int = 8) -> dict[str, HeadValidation]:
    """Loss and detections of each of ``heads`` on the tiles of ``vset`` (body features computed once)."""
    mc = model.config
    tile = vset.images.shape[-1]
    anchors = anchor_centres(tile, tile, mc, device=device)
    out = {h: HeadValidation() for h in heads}
    was_training = model.training
    model.eval()
    try:
        for lo in range(0, len(vset.names), batch_size):
            hi = min(len(vset.names), lo + batch_size)
            x = vset.images[lo:hi].to(device)
            centres = [c.to(device) for c in vset.centres[lo:hi]]
            with autocast():
                feats = model.features(x)
            for head in heads:
                with autocast():
                    outputs = model.head_forward(feats, head)
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
                    found, scores = detect(outputs[i].float(), anchors, mc,
                                           min_distance_px=0.8 * mc.particle_diameter_px, score_floor=0.0)
                    found, scores, c = found.cpu().double().numpy(), scores.cpu().double().numpy(), centres[i]
                    hv.picks.append(Picks(name, found[:, 0], found[:, 1], scores))
                    c = c.cpu().double().numpy()
                    hv.truth.append(Picks(name, c[:, 0], c[:, 1]))
                    hv.names.append(name)
    finally:
        model.train(was_training)
    return out
