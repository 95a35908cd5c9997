"""Training crops: random crops of cached micrographs with their particle centres (and the places to
ignore), and validation tiles.

Steps draw random crops with random 90-degree rotations and flips (optionally any angle), padded with
background-like noise when a micrograph is smaller than the crop. Every random choice comes from the
step's seed and the crop's position in the step's global batch (`hydrapick.training.sampler.Step`), so a
step re-run after a resume draws the same crops, whichever rank of a ``torchrun`` launch draws them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import TrainConfig
from ..preprocess import pad_with_noise
from .datasets import MicrographSample
from .randomise import Randomisation, draw_scale, random_preprocess, zoom


def dihedral(image: torch.Tensor, centres: torch.Tensor, k: int, flip: bool,
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror (x -> W-1-x) if ``flip``, then rotate by ``k`` quarter turns; centres follow the pixels.

    ``image`` (..., H, W); ``centres`` (P, 2) (x, y) in pixels (pixel-centre convention).
    """
    centres = centres.clone()
    if flip:
        image = image.flip(-1)
        centres[:, 0] = image.shape[-1] - 1 - centres[:, 0]
    for _ in range(k % 4):
        width = image.shape[-1]
        # torch.rot90 (dims H, W): out[i, j] = in[j, W-1-i], so (x, y) -> (y, W-1-x).
        image = torch.rot90(image, 1, (-2, -1))
        centres = torch.stack([centres[:, 1], width - 1 - centres[:, 0]], dim=1)
    return image, centres


def rotate(image: torch.Tensor, centres: torch.Tensor, angle_rad: float, out_px: int,
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate ``image`` (L, L) by ``angle_rad`` about its centre and cut the central ``out_px`` square.

    ``L`` should be at least ``out_px * sqrt(2)`` so the output has no empty corners. Bilinear
    interpolation slightly smooths the noise, which is why arbitrary angles are off by default.
    """
    size = image.shape[-1]
    c, s = math.cos(angle_rad), math.sin(angle_rad)
    r = torch.arange(out_px, dtype=torch.float32) - (out_px - 1) / 2
    dy, dx = torch.meshgrid(r, r, indexing="ij")
    # Output pixel d (relative to the output centre) samples input pixel R d + input centre.
    sx = c * dx - s * dy + (size - 1) / 2
    sy = s * dx + c * dy + (size - 1) / 2
    grid = torch.stack([(2 * sx + 1) / size - 1, (2 * sy + 1) / size - 1], dim=-1)
    out = F.grid_sample(image.float()[None, None], grid[None], mode="bilinear", align_corners=False)[0, 0]
    rel = centres - (size - 1) / 2
    # Inverse rotation R^T maps input positions to output ones.
    new = torch.stack([c * rel[:, 0] + s * rel[:, 1], -s * rel[:, 0] + c * rel[:, 1]], dim=1)
    new = new + (out_px - 1) / 2
    return out, new


def inside(centres: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Mask of centres within an image of ``height`` x ``width`` pixels (pixel-centre convention)."""
    return ((centres[:, 0] >= -0.5) & (centres[:, 0] < width - 0.5)
            & (centres[:, 1] >= -0.5) & (centres[:, 1] < height - 0.5))


@dataclass(frozen=True)
class Augmentation:
    """How training crops are drawn."""

    crop_px: int = 368
    flips: bool = True  # random 90-degree rotations and mirror images (exact, no interpolation)
    any_angle: bool = False  # also rotate by a random angle (bilinear interpolation)
    randomisation: Randomisation = Randomisation()  # random particle scale and preprocessing


def augmentation_for(config: TrainConfig) -> Augmentation:
    """The crops a training run's config asks for."""
    return Augmentation(crop_px=config.crop_px, flips=config.flips, any_angle=config.any_angle,
                        randomisation=Randomisation(config.scale_min, config.scale_max,
                                                    config.preprocess_probability, config.blur_max_px,
                                                    config.denoisers, config.spectral_tilt,
                                                    config.bilateral_probability, config.clahe_probability))


def random_crop(sample: MicrographSample, aug: Augmentation, rng: np.random.Generator,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One augmented crop of ``sample``: ``(image (crop, crop) float32, centres (P, 2), ignore (Q, 2))``.

    The crop position is uniform over the micrograph; a micrograph smaller than the crop is padded with
    noise of its own background (`hydrapick.preprocess.pad_with_noise`). The places to ignore follow
    the pixels exactly as the particle centres do.
    """
    randomised = aug.randomisation.active
    # A particle drawn `scale` x its size: crop out_px / scale pixels and zoom them to out_px.
    scale = draw_scale(aug.randomisation, rng) if randomised else 1.0
    out_px = aug.crop_px
    zoomed_px = max(8, round(out_px / scale))
    size = math.ceil(zoomed_px * math.sqrt(2)) + 2 if aug.any_angle else zoomed_px
    h, w = sample.shape
    y0 = int(rng.integers(0, max(0, h - size) + 1))
    x0 = int(rng.integers(0, max(0, w - size) + 1))
    image = sample.image[y0:y0 + size, x0:x0 + size].float()
    # Particle centres and places to ignore move together; ``is_particle`` tells them apart at the end.
    is_particle = torch.cat([torch.ones(len(sample.centres), dtype=torch.bool),
                             torch.zeros(len(sample.ignore), dtype=torch.bool)])
    centres = torch.cat([sample.centres, sample.ignore]) - torch.tensor([x0, y0], dtype=torch.float32)
    if image.shape != (size, size):
        image = pad_with_noise(image, (size, size), generator=generator)
        # The real pixels sit at the top left of the padded crop; move them to a random place.
        dy, dx = int(rng.integers(0, size - min(h, size) + 1)), int(rng.integers(0, size - min(w, size) + 1))
        if dy or dx:
            image = torch.roll(image, shifts=(dy, dx), dims=(0, 1))
            centres = centres + torch.tensor([dx, dy], dtype=torch.float32)
    keep = inside(centres, size, size)
    centres, is_particle = centres[keep], is_particle[keep]
    if aug.flips:
        image, centres = dihedral(image, centres, int(rng.integers(4)), bool(rng.integers(2)))
    if aug.any_angle:
        image, centres = rotate(image, centres, float(rng.uniform(0, 2 * math.pi)), zoomed_px)
        keep = inside(centres, zoomed_px, zoomed_px)
        centres, is_particle = centres[keep], is_particle[keep]
    if randomised:
        image, centres = zoom(image, centres, out_px)
        keep = inside(centres, out_px, out_px)
        centres, is_particle = centres[keep], is_particle[keep]
        if rng.random() < aug.randomisation.preprocess_probability:
            image = random_preprocess(image, rng, generator, aug.randomisation.blur_max_px,
                                      aug.randomisation.denoisers, aug.randomisation.spectral_tilt,
                                      aug.randomisation.bilateral_probability,
                                      aug.randomisation.clahe_probability)
    return image.contiguous(), centres[is_particle], centres[~is_particle]


def make_batch(samples: Sequence[MicrographSample], aug: Augmentation, seed: Sequence[int],
               positions: Sequence[int] | None = None,
               ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Augmented crops of ``samples``: ``(images (N, 1, crop, crop), [centres (P_i, 2)],
    [places to ignore (Q_i, 2)])``.

    ``seed`` (a `Step.seed`) and each sample's position in the global batch (``positions``; default
    0, 1, ...) fully determine the crops: sample ``k`` draws everything from its own stream
    ``(*seed, positions[k])``, so a slice of a batch is drawn as it would be in the whole batch.
    """
    positions = range(len(samples)) if positions is None else positions
    if len(positions) != len(samples):
        raise ValueError(f"{len(samples)} samples but {len(positions)} positions")
    images, centres, ignore = [], [], []
    for sample, position in zip(samples, positions, strict=True):
        rng = np.random.default_rng([*seed, position])
        generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
        image, c, unsure = random_crop(sample, aug, rng, generator)
        images.append(image)
        centres.append(c)
        ignore.append(unsure)
    # N crops of (crop, crop) -> (N, 1, crop, crop)
    return torch.stack(images)[:, None], centres, ignore


def tiles(sample: MicrographSample, tile_px: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cover ``sample`` with square tiles for validation: ``[(image (t, t) float32, centres (P, 2))]``.

    Tiles step by ``tile_px``; the last row/column is aligned with the micrograph's edge (overlapping its
    neighbour) rather than padded. A micrograph smaller than a tile is padded with noise drawn from
    ``seed``, so validation is the same every epoch.
    """
    h, w = sample.shape

    def starts(n: int) -> list[int]:
        if n <= tile_px:
            return [0]
        out = list(range(0, n - tile_px, tile_px))
        return out + [n - tile_px]

    out = []
    generator = torch.Generator().manual_seed(seed)
    for y0 in starts(h):
        for x0 in starts(w):
            image = sample.image[y0:y0 + tile_px, x0:x0 + tile_px].float()
            if image.shape != (tile_px, tile_px):
                image = pad_with_noise(image, (tile_px, tile_px), generator=generator)
            c = sample.centres - torch.tensor([x0, y0], dtype=torch.float32)
            out.append((image.contiguous(), c[inside(c, tile_px, tile_px)]))
    return out
