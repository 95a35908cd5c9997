"""`simulate`: everything ``hydrapick simulate`` does, from settings to a labelled dataset on disk.

Builds the `SimulationConfig` from a TOML file and/or settings, chooses the particle (an atomic model,
a point-group assembly, or a procedural particle), refuses to overwrite an existing dataset unless told
to, and calls `simulate_dataset`. The command line only parses options, calls it and prints a summary.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import SimulationConfig, from_dict, to_dict
from .dataset import simulate_dataset
from .procedural import procedural_structure
from .structures import Structure, load_structure
from .symmetry import symmetric_assembly


@dataclass(frozen=True)
class SimulatedDataset:
    """A dataset written by `simulate`.

    Parameters
    ----------
    out_dir : Path
        The dataset's folder (micrographs/, coordinates/, particles/, manifest.toml).
    manifest : Path
        Its manifest.
    micrographs : list of dict
        The manifest's record of each micrograph (name, seed, pixel_size_A, diameter_A, diameter_px,
        n_particles, params, file names).
    """

    out_dir: Path
    manifest: Path
    micrographs: list[dict[str, Any]]


def simulate(out_dir: str | os.PathLike, n: int, *,
             config: SimulationConfig | str | os.PathLike | None = None,
             settings: Mapping[str, Any] | None = None,
             structure: Structure | str | os.PathLike | None = None, assembly: str = "auto",
             chains: Sequence[str] | None = None, symmetry: str | None = None, shape: str | None = None,
             mass_kDa: float | None = None, per_micrograph_structure: bool = False, seed: int = 0,
             force: bool = False, progress: Callable[[int, int], None] | None = None,
             extra: Mapping[str, Any] | None = None) -> SimulatedDataset:
    """Simulate ``n`` labelled micrographs into ``out_dir`` (``hydrapick simulate``).

    Parameters
    ----------
    out_dir : path
        Output folder: micrographs/*.mrc, coordinates/*.star, particles/*.star, manifest.toml.
    n : int
        Micrographs to make.
    config : SimulationConfig or path, optional
        The settings, or a TOML file of `SimulationConfig` settings (default: `SimulationConfig()`).
    settings : mapping, optional
        `SimulationConfig` fields that override ``config`` (e.g. ``{"shape_px": (1024, 1024)}``).
    structure : Structure or path, optional
        The particle: a `Structure` or a PDB/mmCIF file (default: a procedural particle).
    assembly : str
        With a structure file: the biological assembly to build (``"auto"``: the first one defined,
        ``"none"``: the deposited model, or an assembly name).
    chains : sequence of str, optional
        With a structure file: keep only these chains.
    symmetry : str, optional
        Build a point-group assembly (C5, D7, T, O, I) from the structure's chains or from a procedural
        subunit.
    shape : str, optional
        Procedural particle kind (`hydrapick.simulation.KINDS`); not with ``structure``.
    mass_kDa : float, optional
        Procedural particle mass in kDa (default: drawn); not with ``structure``.
    per_micrograph_structure : bool
        A different procedural particle on every micrograph (default: one for the dataset).
    seed : int
        Dataset seed: same seed, same output.
    force : bool
        Write into a folder that already holds a simulated dataset.
    progress : callable, optional
        Called as ``progress(done, n)`` after each micrograph.
    extra : mapping, optional
        More top-level manifest entries (e.g. the command line).

    Returns
    -------
    SimulatedDataset

    Raises
    ------
    ValueError
        Unreadable or invalid settings, an existing dataset without ``force``, or conflicting choices
        of particle; `StructureError` for an unreadable structure.
    """
    simulation_config = simulation_config_from(config, settings, shape=shape, mass_kDa=mass_kDa)
    out = Path(out_dir)
    if (out / "manifest.toml").exists() and not force:
        raise ValueError(f"'{out}' already holds a simulated dataset (manifest.toml); "
                         "use --force to overwrite it or choose another folder")
    is_file = structure is not None and not isinstance(structure, Structure)
    if structure is not None and (shape or mass_kDa is not None or per_micrograph_structure):
        raise ValueError("--shape, --mass and --per-micrograph-structure are for procedural "
                         "particles; leave them out with --structure")
    if is_file:
        structure = load_structure(structure, chains=list(chains or ()) or None,
                                   assembly=None if assembly.lower() == "none" else assembly)
    if structure is not None and symmetry:
        structure = symmetric_assembly(structure, symmetry, seed)
    elif symmetry:
        if per_micrograph_structure:
            raise ValueError("--symmetry builds one particle; leave out --per-micrograph-structure")
        structure = procedural_structure(shape or "random", seed, mass_kDa=mass_kDa, symmetry=symmetry)
    manifest = simulate_dataset(out, n, simulation_config, structure=structure, seed=seed, progress=progress,
                                per_micrograph_structure=per_micrograph_structure,
                                extra=dict(extra) if extra else None)
    with open(manifest, "rb") as fh:
        records = tomllib.load(fh)["micrograph"]
    return SimulatedDataset(out_dir=out, manifest=manifest, micrographs=records)


def simulation_config_from(config: SimulationConfig | str | os.PathLike | None = None,
                           settings: Mapping[str, Any] | None = None, *, shape: str | None = None,
                           mass_kDa: float | None = None) -> SimulationConfig:
    """A `SimulationConfig` from a config (or a TOML file of one) with ``settings`` laid over it.

    ``shape`` and ``mass_kDa`` set ``structure_kind`` and ``structure_mass_kDa_range`` (one value).

    Raises
    ------
    ValueError
        An unreadable TOML file, or unknown or invalid settings (the message names the file).
    """
    if isinstance(config, SimulationConfig) and not settings and not shape and mass_kDa is None:
        return config
    values: dict[str, Any] = {}
    where = "simulate options"
    if isinstance(config, SimulationConfig):
        values.update(to_dict(config))
    elif config is not None:
        where = os.fspath(config)
        try:
            with open(config, "rb") as fh:
                values.update(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ValueError(f"cannot read config '{where}': {exc}") from None
    values.update(settings or {})
    if shape:
        values["structure_kind"] = shape
    if mass_kDa is not None:
        values["structure_mass_kDa_range"] = (mass_kDa, mass_kDa)
    try:
        return from_dict(SimulationConfig, values, where=where)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
