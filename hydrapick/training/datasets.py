"""Training data: a manifest's datasets read (or simulated) once and cached at the model's scale.

A training corpus is described by a TOML manifest (`hydrapick.training.manifest`; reference:
docs/training.md), from which `load_datasets` builds the in-memory datasets. Every micrograph is read
and resampled once with `hydrapick.preprocess.prepare` (the same code path as picking), then kept in
memory at the model's scale together with its particle centres, so a training step never touches the
disk. Crops and batches are `hydrapick.training.augment`; which micrographs a step uses is
`hydrapick.training.sampler`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..config import ModelConfig
from ..picks import Picks
from ..preprocess import prepare
from .manifest import (
    DatasetFiles,
    DatasetSpec,
    Manifest,
    ManifestError,
    read_manifest,
    resolve_dataset_files,
)
from .simulated import simulate_source
from .splits import split_names

log = logging.getLogger(__name__)


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
    ignore : (Q, 2) float32 tensor
        Places (x, y) in model pixels that are neither particle nor background: anchors near them add
        no classification loss (a manifest's ``ignore_coordinates``).
    """

    name: str
    source: str
    image: torch.Tensor
    centres: torch.Tensor
    pixel_size_A: float
    diameter_A: float
    ignore: torch.Tensor = field(default_factory=lambda: torch.zeros((0, 2), dtype=torch.float32))

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
            "ignored_train": int(sum(len(s.ignore) for s in self.train)),
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
    plans = [None if spec.simulated is not None
             else resolve_dataset_files(spec, problems, **manifest.split_options)
             for spec in manifest.datasets]
    if problems:
        raise ManifestError(manifest.path, problems)

    total = sum(len(p.labelled) if p else spec.simulated.n_micrographs
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
        samples = prepare_files(plan, spec.diameter_A, model_config, cache_dtype=cache_dtype,
                                clip_percentile=clip_percentile, device=device,
                                on_each=lambda key, name=spec.name: tick(f"{name}: {key}"))
        split = plan.split
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
                                **manifest.split_options, explicit=spec.explicit_split())
            source = spec.simulated.structure or spec.simulated.procedural or "procedural"
            out.append({"name": spec.name, "kind": f"simulated ({source})", "particles": None,
                        "diameter_A": spec.diameter_A, "pixel_size_A": None,
                        **{f"n_{k}": len(v) for k, v in split.items()}})
            continue
        plan = resolve_dataset_files(spec, problems, **manifest.split_options)
        sizes = [f.pixel_size_A for f in plan.labelled.values()]
        out.append({"name": spec.name, "kind": "files",
                    "particles": int(sum(len(f.picks) for f in plan.labelled.values())),
                    "diameter_A": spec.diameter_A,
                    "pixel_size_A": [min(sizes), max(sizes)] if sizes else None,
                    **{f"n_{k}": len(v) for k, v in plan.split.items()}})
    if problems:
        raise ManifestError(manifest.path, problems)
    return out


def prepare_files(files: DatasetFiles, diameter_A: float, model_config: ModelConfig, *,
                  cache_dtype: torch.dtype = torch.float32, clip_percentile: float = 0.1,
                  device: torch.device | str | None = None, on_each: Callable[[str], None] | None = None,
                  ) -> dict[str, MicrographSample]:
    """Read every labelled micrograph of ``files`` and bring it to the model's scale, by key.

    ``on_each(key)`` is called after each micrograph.
    """
    samples: dict[str, MicrographSample] = {}
    for key, labelled in files.labelled.items():
        samples[key] = prepare_sample(key, labelled.path, read_image(labelled.path), labelled.pixel_size_A,
                                      diameter_A, labelled.picks, model_config, cache_dtype, clip_percentile,
                                      device, ignore=labelled.ignore)
        if on_each is not None:
            on_each(key)
    return samples


def read_image(path: str) -> np.ndarray:
    """The pixels of the micrograph at ``path`` as a writable array (a tensor can be built on it)."""
    from ..io import read_micrograph

    data = read_micrograph(path).data
    # A read-only memory map cannot back a tensor; one float32 copy per micrograph is cheap.
    return data if data.flags.writeable else np.array(data, dtype=np.float32)


def prepare_sample(key: str, source: str, image: np.ndarray, pixel_size_A: float, diameter_A: float,
                   picks: Picks, model_config: ModelConfig, cache_dtype: torch.dtype, clip_percentile: float,
                   device, ignore: Picks | None = None) -> MicrographSample:
    """One micrograph resampled and normalised for the model, its ``picks`` (and the places to
    ``ignore``) moved to model pixels."""
    prepared = prepare(image, pixel_size_A, diameter_A, model_config, clip_percentile=clip_percentile,
                       device=device)

    def model_xy(p: Picks) -> torch.Tensor:
        moved = prepared.to_model(p)
        return torch.as_tensor(np.stack([moved.x, moved.y], axis=1).reshape(-1, 2), dtype=torch.float32)

    return MicrographSample(name=key, source=source, image=prepared.image.to("cpu", cache_dtype).contiguous(),
                            centres=model_xy(picks), pixel_size_A=float(pixel_size_A),
                            diameter_A=float(diameter_A),
                            ignore=model_xy(ignore if ignore is not None else Picks.empty()))


def _load_simulated(spec: DatasetSpec, manifest: Manifest, model_config: ModelConfig, cache_dtype,
                    clip_percentile, device, tick: Callable[[str], None]) -> TrainingDataset:
    source = spec.simulated
    assert source is not None
    samples = []
    for i, (key, label, image, pixel_size_A, diameter_A, picks) in enumerate(
            simulate_source(spec.name, source, spec.diameter_A)):
        samples.append(prepare_sample(key, label, image, pixel_size_A, diameter_A, picks, model_config,
                                      cache_dtype, clip_percentile, device))
        tick(f"{spec.name}: simulated {i + 1}/{source.n_micrographs}")
    names = [s.name for s in samples]
    split = split_names(names, spec.name, **manifest.split_options, explicit=spec.explicit_split())
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
    samples = [prepare_sample(f"{name}_{i:04d}", f"memory:{name}/{i}", img, float(size), diameter_A, p,
                              model_config, cache_dtype, clip_percentile, None)
               for i, (img, p, size) in enumerate(zip(images, picks, sizes, strict=True))]
    cut = len(samples) - valid
    return TrainingDataset(name=name, diameter_A=float(diameter_A), train=samples[:cut], valid=samples[cut:])
