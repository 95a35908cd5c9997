"""Training data: a manifest's datasets cached at the model's scale, splits, crops, batches and sampling.

A training corpus is described by a TOML manifest (`hydrapick.manifest`; reference: docs/training.md),
from which `load_datasets` builds the in-memory datasets. Every micrograph is read
and resampled once with `hydrapick.preprocess.prepare` (the same code path as picking), then kept in
memory at the model's scale together with its particle centres, so a training step never touches the
disk. Steps draw random crops with random 90-degree rotations and flips (optionally any angle), padded
with background-like noise when a micrograph is smaller than the crop, and every mini-batch comes from
one dataset (thesis 4.3), which keeps small datasets represented.

Randomness is a pure function of ``(seed, phase, epoch, step, rank)`` (see `DatasetBatchSampler`), so an
interrupted run resumed from an epoch checkpoint draws exactly the batches it would have drawn, and the
ranks of a multi-GPU run draw disjoint shares of the same global batch.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .config import ModelConfig
from .manifest import (
    MICROGRAPH_SUFFIXES,
    SPLITS,
    DatasetSpec,
    Manifest,
    ManifestError,
    is_glob,
    read_manifest,
    simulation_config,
)
from .picks import Picks, micrograph_key
from .preprocess import pad_with_noise, prepare

log = logging.getLogger(__name__)


# --- splits ------------------------------------------------------------------------------------------

def split_names(names: Sequence[str], dataset: str, *, valid_fraction: float = 0.1,
                test_fraction: float = 0.1, seed: int = 0,
                explicit: dict[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """Assign micrograph keys to train/valid/test.

    With ``explicit`` (split -> keys), the listed keys go where they are listed and the rest to train
    (unless ``train`` is listed too, in which case unlisted micrographs are left out). Otherwise a seeded
    shuffle (seed and dataset name, so adding a dataset leaves the others' splits unchanged) gives
    ``round(n * valid_fraction)`` validation micrographs (at least 1 when n >= 3) and
    ``round(n * test_fraction)`` test micrographs (at least 1 when n >= 5); tiny datasets train on all.
    """
    names = list(names)
    if explicit:
        out: dict[str, list[str]] = {s: [] for s in SPLITS}
        where = {k: s for s, keys in explicit.items() for k in keys}
        for n in names:
            part = where.get(n, None if "train" in explicit else "train")
            if part is not None:
                out[part].append(n)
        return out
    n = len(names)
    n_valid = max(1, round(n * valid_fraction)) if n >= 3 and valid_fraction > 0 else 0
    n_test = max(1, round(n * test_fraction)) if n >= 5 and test_fraction > 0 else 0
    rng = np.random.default_rng([seed, zlib.crc32(dataset.encode())])
    order = [names[i] for i in rng.permutation(n)]
    valid, test = order[:n_valid], order[n_valid:n_valid + n_test]
    chosen = set(valid) | set(test)
    return {"train": [m for m in names if m not in chosen], "valid": sorted(valid, key=names.index),
            "test": sorted(test, key=names.index)}


# --- in-memory data ----------------------------------------------------------------------------------

@dataclass
class MicrographSample:
    """One micrograph at the model's scale.

    Attributes
    ----------
    name : str
        Micrograph key (`hydrapick.picks.micrograph_key`).
    source : str
        File path, or ``simulated:<dataset>/<index>``.
    image : (H, W) tensor
        Normalised micrograph at the model's scale (float32, or float16 to halve the memory).
    centres : (P, 2) float32 tensor
        Particle centres (x, y) in model pixels.
    pixel_size_A, diameter_A : float
        As used for resampling.
    """

    name: str
    source: str
    image: torch.Tensor
    centres: torch.Tensor
    pixel_size_A: float
    diameter_A: float

    @property
    def shape(self) -> tuple[int, int]:
        return int(self.image.shape[0]), int(self.image.shape[1])


@dataclass
class TrainingDataset:
    """A dataset ready for training: micrographs at model scale, split into train/valid (test by name)."""

    name: str
    diameter_A: float
    train: list[MicrographSample]
    valid: list[MicrographSample] = field(default_factory=list)
    test_names: list[str] = field(default_factory=list)
    weight: float = 1.0
    kind: str = "files"

    def summary(self) -> dict[str, Any]:
        """Plain-dict description for checkpoints and logs."""
        samples = self.train + self.valid
        sizes = sorted({round(s.pixel_size_A, 4) for s in samples})
        return {
            "name": self.name, "kind": self.kind, "diameter_A": self.diameter_A, "weight": self.weight,
            "pixel_size_A": [sizes[0], sizes[-1]] if sizes else None,
            "n_train": len(self.train), "n_valid": len(self.valid), "n_test": len(self.test_names),
            "particles_train": int(sum(len(s.centres) for s in self.train)),
            "particles_valid": int(sum(len(s.centres) for s in self.valid)),
            "micrographs": {"train": [s.name for s in self.train], "valid": [s.name for s in self.valid],
                            "test": list(self.test_names)},
        }


ProgressFn = Callable[[str, int, int], None]  # (message, done, total)


def load_datasets(manifest: Manifest | str | os.PathLike, model_config: ModelConfig, *,
                  cache_dtype: torch.dtype = torch.float32, clip_percentile: float = 0.1,
                  device: torch.device | str | None = None, progress: ProgressFn | None = None,
                  ) -> list[TrainingDataset]:
    """Read (or simulate) every dataset of ``manifest`` and cache it at the model's scale.

    All cheap checks come first (micrograph lists, coordinate files, matching of coordinates to
    micrographs, pixel sizes in headers), so a bad manifest fails in seconds with every problem listed
    rather than after an hour of resampling. Test micrographs are not loaded, only named.

    Parameters
    ----------
    manifest : Manifest or path
    model_config : ModelConfig
        Gives the particle diameter in model pixels that micrographs are resampled to.
    cache_dtype : torch.dtype
        float32, or float16 to halve the memory of the cache.
    device : optional
        Where resampling runs (the cache itself is kept on the CPU).
    progress : callable, optional
        Called as ``progress(message, done, total)`` after each micrograph.

    Raises
    ------
    ManifestError
        Listing every problem found in the cheap checks.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    problems: list[str] = []
    plans = []
    for spec in manifest.datasets:
        if spec.simulated is None:
            plans.append(_plan_files(spec, manifest, problems))
        else:
            plans.append(None)
    if problems:
        raise ManifestError(manifest.path, problems)

    total = sum(len(p["todo"]) if p else spec.simulated.n_micrographs
                for p, spec in zip(plans, manifest.datasets, strict=True))
    done = 0

    def tick(message: str) -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(message, done, total)

    out = []
    for spec, plan in zip(manifest.datasets, plans, strict=True):
        if plan is None:
            out.append(_load_simulated(spec, manifest, model_config, cache_dtype, clip_percentile, device,
                                       tick))
            continue
        samples: dict[str, MicrographSample] = {}
        for key, (path, pixel_size, picks) in plan["todo"].items():
            samples[key] = _prepare_sample(key, path, _read_image(path), pixel_size, spec.diameter_A, picks,
                                           model_config, cache_dtype, clip_percentile, device)
            tick(f"{spec.name}: {key}")
        split = plan["split"]
        out.append(TrainingDataset(name=spec.name, diameter_A=float(spec.diameter_A),
                                   train=[samples[k] for k in split["train"]],
                                   valid=[samples[k] for k in split["valid"]],
                                   test_names=list(split["test"]), weight=spec.weight))
        log.info("dataset %s: %d train, %d valid, %d test micrographs", spec.name, len(split["train"]),
                 len(split["valid"]), len(split["test"]))
    return out


def inspect_manifest(manifest: Manifest | str | os.PathLike) -> list[dict[str, Any]]:
    """Run every cheap check of `load_datasets` and describe each dataset without preparing any image.

    Returns one dict per dataset: ``name``, ``kind``, ``n_train``/``n_valid``/``n_test`` micrographs,
    ``particles`` (train + valid), ``diameter_A`` and ``pixel_size_A`` ([min, max]; None for simulated).

    Raises
    ------
    ManifestError
        Listing every problem found.
    """
    if not isinstance(manifest, Manifest):
        manifest = read_manifest(manifest)
    problems: list[str] = []
    out = []
    for spec in manifest.datasets:
        if spec.simulated is not None:
            n = spec.simulated.n_micrographs
            split = split_names([f"{spec.name}_{i:04d}" for i in range(n)], spec.name,
                                valid_fraction=manifest.valid_fraction, test_fraction=manifest.test_fraction,
                                seed=manifest.split_seed, explicit=spec.explicit_split())
            source = spec.simulated.structure or spec.simulated.procedural or "procedural"
            out.append({"name": spec.name, "kind": f"simulated ({source})", "particles": None,
                        "diameter_A": spec.diameter_A, "pixel_size_A": None,
                        **{f"n_{k}": len(v) for k, v in split.items()}})
            continue
        plan = _plan_files(spec, manifest, problems)
        if plan is None:
            continue
        sizes = [p for _, p, _ in plan["todo"].values()]
        out.append({"name": spec.name, "kind": "files",
                    "particles": int(sum(len(picks) for _, _, picks in plan["todo"].values())),
                    "diameter_A": spec.diameter_A,
                    "pixel_size_A": [min(sizes), max(sizes)] if sizes else None,
                    **{f"n_{k}": len(v) for k, v in plan["split"].items()}})
    if problems:
        raise ManifestError(manifest.path, problems)
    return out


def _plan_files(spec: DatasetSpec, manifest: Manifest, problems: list[str]) -> dict[str, Any] | None:
    """Cheap pass over one file-based dataset: list micrographs, read coordinates, read headers."""
    from .io import FormatError, read_micrograph

    where = f"datasets.{spec.name}"
    paths: dict[str, str] = {}
    for entry in spec.micrographs:
        for path in _expand_micrographs(entry):
            key = micrograph_key(path)
            if key in paths and paths[key] != path:
                problems.append(f"{where}: micrographs '{paths[key]}' and '{path}' have the same name "
                                f"'{key}'")
            paths[key] = path
    parts = []
    labelled_empty: set[str] = set()  # micrographs whose own coordinate file holds no particles
    for entry in spec.coordinates:
        try:
            picks, empty_files = _read_coordinate_entry(entry, spec.coordinate_format)
        except (FormatError, ValueError, OSError) as exc:
            problems.append(f"{where}.coordinates: {exc}")
            continue
        parts.append(picks)
        labelled_empty.update(empty_files)
    picks = Picks.concat(parts)
    keys = np.array([micrograph_key(m) for m in picks.micrograph], dtype=object)
    known = set(paths)
    orphans = sorted(set(keys.tolist()) - known)
    if orphans:
        log.warning("%s: coordinates for %d micrograph(s) not in the micrograph list are ignored (%s)",
                    where, len(orphans), ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else ""))

    explicit = spec.explicit_split()
    for part, listed in explicit.items():
        missing = [k for k in listed if k not in known]
        if missing:
            problems.append(f"{where}.{part}: no micrograph named {', '.join(missing)}")
    split = split_names(list(paths), spec.name, valid_fraction=manifest.valid_fraction,
                        test_fraction=manifest.test_fraction, seed=manifest.split_seed, explicit=explicit)
    if not split["train"]:
        problems.append(f"{where}: no training micrographs left after the split")

    todo: dict[str, tuple[str, float, Picks]] = {}
    empty = []
    for key in split["train"] + split["valid"]:
        path = paths[key]
        mine = picks[keys == key] if len(picks) else Picks.empty()
        if not len(mine) and not spec.allow_empty and key not in labelled_empty:
            empty.append(key)
        try:
            mic = read_micrograph(path, pixel_size_A=spec.pixel_size_A)
        except (FormatError, ValueError, OSError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        if mic.pixel_size_A is None:
            problems.append(f"{where}: '{path}' has no pixel size in its header; give it (pixel_size_A in "
                            "a manifest, --apix on the command line)")
            continue
        if spec.flip_y and len(mine):
            mine = mine.flip_y(mic.shape[0])
        h, w = mic.shape
        outside = (mine.x < -0.5) | (mine.x > w - 0.5) | (mine.y < -0.5) | (mine.y > h - 0.5)
        if outside.any():
            problems.append(f"{where}: {int(outside.sum())} coordinate(s) of '{key}' lie outside the "
                            f"{w}x{h} micrograph (wrong file, or y flipped? see flip_y)")
        todo[key] = (path, float(mic.pixel_size_A), mine)
    if empty:
        empty.sort()
        shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        problems.append(f"{where}: {len(empty)} micrograph(s) without coordinates: {shown} (if they "
                        "truly hold no particles, give each an empty coordinate file or set allow_empty = "
                        "true)")
    return {"todo": todo, "split": split}


def _read_coordinate_entry(entry: str, coordinate_format: str | None) -> tuple[Picks, list[str]]:
    """Coordinates of one ``coordinates`` entry (file, folder or glob), and the micrographs whose own
    per-micrograph file in a folder or glob holds no particle: an empty file says "no particles here"
    (as in `hydrapick evaluate`), a missing one is an error unless ``allow_empty``."""
    from .io import read_coordinate_folder_with_empty, read_coordinates

    if os.path.isdir(entry) or (is_glob(entry) and not os.path.exists(entry)):
        return read_coordinate_folder_with_empty(entry, coordinate_format)
    return read_coordinates(entry, coordinate_format), []


def _expand_micrographs(entry: str) -> list[str]:
    if is_glob(entry) and not os.path.exists(entry):
        return sorted(m for m in glob.glob(entry, recursive=True) if m.lower().endswith(MICROGRAPH_SUFFIXES))
    if os.path.isdir(entry):
        return sorted(str(p) for p in Path(entry).iterdir() if p.name.lower().endswith(MICROGRAPH_SUFFIXES))
    if entry.lower().endswith((".star", ".txt", ".lst", ".list")):
        from .io import read_micrograph_list

        return [p for p, _ in read_micrograph_list(entry)]
    return [entry]


def _read_image(path: str) -> np.ndarray:
    from .io import read_micrograph

    data = read_micrograph(path).data
    # A read-only memory map cannot back a tensor; one float32 copy per micrograph is cheap.
    return data if data.flags.writeable else np.array(data, dtype=np.float32)


def _prepare_sample(key: str, source: str, image: np.ndarray, pixel_size_A: float, diameter_A: float,
                    picks: Picks, model_config: ModelConfig, cache_dtype: torch.dtype, clip_percentile: float,
                    device) -> MicrographSample:
    prepared = prepare(image, pixel_size_A, diameter_A, model_config, clip_percentile=clip_percentile,
                       device=device)
    model_picks = prepared.to_model(picks)
    centres = torch.as_tensor(np.stack([model_picks.x, model_picks.y], axis=1).reshape(-1, 2),
                              dtype=torch.float32)
    return MicrographSample(name=key, source=source, image=prepared.image.to("cpu", cache_dtype).contiguous(),
                            centres=centres, pixel_size_A=float(pixel_size_A), diameter_A=float(diameter_A))


def _load_simulated(spec: DatasetSpec, manifest: Manifest, model_config: ModelConfig, cache_dtype,
                    clip_percentile, device, tick: Callable[[str], None]) -> TrainingDataset:
    from . import simulation as simulate

    source = spec.simulated
    assert source is not None
    config = simulation_config(source.config)
    name_seed = zlib.crc32(spec.name.encode())
    rng = np.random.default_rng([source.seed, name_seed])
    if source.structure is not None:
        structure = simulate.load_structure(source.structure)
    else:
        # One particle for the whole dataset: a dataset is one specimen.
        mass = source.mass_kDa
        if mass is None and config.structure_mass_kDa_range is not None:
            lo, hi = config.structure_mass_kDa_range
            mass = float(np.exp(rng.uniform(np.log(lo), np.log(hi))))
        structure = simulate.procedural_structure(source.procedural or config.structure_kind, rng,
                                                  mass_kDa=mass, symmetry=source.symmetry)
    samples = []
    for i in range(source.n_micrographs):
        sim = simulate.simulate_micrograph(config, np.random.default_rng([source.seed, name_seed, i]),
                                           structure=structure)
        key = f"{spec.name}_{i:04d}"
        diameter = spec.diameter_A or float(sim.diameter_A)
        samples.append(_prepare_sample(key, f"simulated:{spec.name}/{i}", sim.image,
                                       float(sim.pixel_size_A), diameter, sim.picks, model_config,
                                       cache_dtype, clip_percentile, device))
        tick(f"{spec.name}: simulated {i + 1}/{source.n_micrographs}")
    names = [s.name for s in samples]
    split = split_names(names, spec.name, valid_fraction=manifest.valid_fraction,
                        test_fraction=manifest.test_fraction, seed=manifest.split_seed,
                        explicit=spec.explicit_split())
    by_name = dict(zip(names, samples, strict=True))
    diameter_A = spec.diameter_A or float(np.median([s.diameter_A for s in samples]))
    return TrainingDataset(name=spec.name, diameter_A=diameter_A, train=[by_name[k] for k in split["train"]],
                           valid=[by_name[k] for k in split["valid"]], test_names=split["test"],
                           weight=spec.weight, kind="simulated")


def dataset_from_arrays(name: str, images: Sequence[np.ndarray], picks: Sequence[Picks],
                        pixel_size_A: float | Sequence[float], diameter_A: float,
                        model_config: ModelConfig, *,
                        valid: int = 0, cache_dtype: torch.dtype = torch.float32,
                        clip_percentile: float = 0.1) -> TrainingDataset:
    """A `TrainingDataset` from micrographs already in memory (tests, notebooks, simulated data).

    The last ``valid`` micrographs are used for validation.
    """
    sizes = [pixel_size_A] * len(images) if np.isscalar(pixel_size_A) else list(pixel_size_A)
    samples = [_prepare_sample(f"{name}_{i:04d}", f"memory:{name}/{i}", img, float(size), diameter_A, p,
                               model_config, cache_dtype, clip_percentile, None)
               for i, (img, p, size) in enumerate(zip(images, picks, sizes, strict=True))]
    cut = len(samples) - valid
    return TrainingDataset(name=name, diameter_A=float(diameter_A), train=samples[:cut], valid=samples[cut:])


# --- augmentation ------------------------------------------------------------------------------------

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


def random_crop(sample: MicrographSample, aug: Augmentation, rng: np.random.Generator,
                generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """One augmented crop of ``sample``: ``(image (crop, crop) float32, centres (P, 2))``.

    The crop position is uniform over the micrograph; a micrograph smaller than the crop is padded with
    noise of its own background (`hydrapick.preprocess.pad_with_noise`).
    """
    out_px = aug.crop_px
    size = math.ceil(out_px * math.sqrt(2)) + 2 if aug.any_angle else out_px
    h, w = sample.shape
    y0 = int(rng.integers(0, max(0, h - size) + 1))
    x0 = int(rng.integers(0, max(0, w - size) + 1))
    image = sample.image[y0:y0 + size, x0:x0 + size].float()
    centres = sample.centres - torch.tensor([x0, y0], dtype=torch.float32)
    if image.shape != (size, size):
        image = pad_with_noise(image, (size, size), generator=generator)
        # The real pixels sit at the top left of the padded crop; move them to a random place.
        dy, dx = int(rng.integers(0, size - min(h, size) + 1)), int(rng.integers(0, size - min(w, size) + 1))
        if dy or dx:
            image = torch.roll(image, shifts=(dy, dx), dims=(0, 1))
            centres = centres + torch.tensor([dx, dy], dtype=torch.float32)
    centres = centres[inside(centres, size, size)]
    if aug.flips:
        image, centres = dihedral(image, centres, int(rng.integers(4)), bool(rng.integers(2)))
    if aug.any_angle:
        image, centres = rotate(image, centres, float(rng.uniform(0, 2 * math.pi)), out_px)
        centres = centres[inside(centres, out_px, out_px)]
    return image.contiguous(), centres


def make_batch(samples: Sequence[MicrographSample], aug: Augmentation, seed: Sequence[int],
               ) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """Augmented crops of ``samples`` as ``(images (N, 1, crop, crop), [centres (P_i, 2)])``.

    ``seed`` fully determines the crops (a `Step.seed`).
    """
    rng = np.random.default_rng(list(seed))
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    images, centres = [], []
    for sample in samples:
        image, c = random_crop(sample, aug, rng, generator)
        images.append(image)
        centres.append(c)
    # N crops of (crop, crop) -> (N, 1, crop, crop)
    return torch.stack(images)[:, None], centres


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


# --- sampling ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Step:
    """One optimisation step of one rank: which dataset, which micrographs, and the crops' seed."""

    index: int
    dataset: int
    micrographs: tuple[int, ...]
    seed: tuple[int, ...]


class DatasetBatchSampler:
    """Plans the mini-batches of an epoch: every batch from one dataset, sharded over ranks.

    An epoch is a fixed number of steps (not a pass over the data), so tiny and huge corpora train alike.
    Datasets are drawn in shuffled rounds that visit every dataset once (equal weights), or at random in
    proportion to their weights; micrographs uniformly within the dataset (without replacement while the
    dataset is large enough).

    For ``world_size`` ranks, a step's global batch of ``world_size * batch_size`` micrographs comes from
    one dataset, drawn from a generator that every rank seeds alike; rank ``r`` takes the ``r``-th slice.
    So all ranks train the same head at each step (no idle parameters under DDP) and see disjoint crops.

    Parameters
    ----------
    sizes : sequence of int
        Number of training micrographs per dataset (all > 0).
    weights : sequence of float, optional
        Relative sampling weight per dataset (default equal).
    """

    def __init__(self, sizes: Sequence[int], batch_size: int, steps_per_epoch: int, *,
                 weights: Sequence[float] | None = None, seed: int = 0, rank: int = 0, world_size: int = 1):
        if not sizes or min(sizes) < 1:
            raise ValueError("every dataset needs at least one training micrograph")
        if batch_size < 1 or steps_per_epoch < 1:
            raise ValueError("batch_size and steps_per_epoch must be positive")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world of size {world_size}")
        self.sizes = [int(s) for s in sizes]
        self.batch_size = int(batch_size)
        self.steps_per_epoch = int(steps_per_epoch)
        w = np.ones(len(sizes)) if weights is None else np.asarray(weights, dtype=float)
        if len(w) != len(sizes) or (w <= 0).any():
            raise ValueError("weights must be positive, one per dataset")
        self.weights = w / w.sum()
        self.seed, self.rank, self.world_size = int(seed), int(rank), int(world_size)

    def epoch(self, epoch: int, phase: int = 0) -> list[Step]:
        """The steps of ``epoch`` in ``phase`` for this rank (a pure function of its arguments)."""
        rng = np.random.default_rng([self.seed, phase, epoch, 0x5A4D])
        n_sets = len(self.sizes)
        if np.allclose(self.weights, self.weights[0]):
            rounds = -(-self.steps_per_epoch // n_sets)
            order = np.concatenate([rng.permutation(n_sets) for _ in range(rounds)])[: self.steps_per_epoch]
        else:
            order = rng.choice(n_sets, size=self.steps_per_epoch, p=self.weights)
        total = self.batch_size * self.world_size
        lo, hi = self.rank * self.batch_size, (self.rank + 1) * self.batch_size
        steps = []
        for i, d in enumerate(order.tolist()):
            n = self.sizes[d]
            chosen = rng.choice(n, size=total, replace=total > n)
            steps.append(Step(index=i, dataset=int(d), micrographs=tuple(int(m) for m in chosen[lo:hi]),
                              seed=(self.seed, phase, epoch, i, self.rank)))
        return steps
