"""A manifest's ``simulated`` datasets: the settings of the table, and the micrographs they stand for.

A ``[datasets.NAME.simulated]`` table names one particle (a structure file or a procedural kind) and a
number of micrographs; `parse_simulated` checks it (`SimulatedSource`), and `simulate_source` makes its
micrographs, the same ones for the same seed and dataset name, when the data are loaded.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..picks import Picks

_SIMULATED_KEYS = {"structure", "procedural", "mass_kDa", "symmetry", "n_micrographs", "seed", "config"}


@dataclass(frozen=True)
class SimulatedSource:
    """A dataset made by the simulator: one structure, ``n_micrographs`` micrographs from ``seed``."""

    n_micrographs: int
    structure: str | None = None  # path of a PDB/mmCIF file
    procedural: str | None = None  # kind for `hydrapick.simulation.procedural_structure`
    mass_kDa: float | None = None  # of the procedural particle (default: drawn for its kind)
    symmetry: str | None = None  # of the procedural particle ("C5", "D7", ...; default: drawn)
    seed: int = 0
    config: tuple[tuple[str, Any], ...] = ()  # SimulationConfig overrides, as sorted (key, value) pairs


def parse_simulated(table: Any, where: str, base: Path, problems: list[str]) -> SimulatedSource | None:
    """Check the ``simulated`` table of dataset ``where``; problems are appended to ``problems``."""
    where = f"{where}.simulated"
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table (structure or procedural, n_micrographs, ...)")
        return None
    for key in sorted(set(table) - _SIMULATED_KEYS):
        problems.append(f"{where}: unknown key '{key}' (known: {', '.join(sorted(_SIMULATED_KEYS))})")
    structure, procedural = table.get("structure"), table.get("procedural")
    if structure is not None and procedural is not None:
        problems.append(f"{where}: give either 'structure' or 'procedural', not both")
    if structure is not None:
        if not isinstance(structure, str):
            problems.append(f"{where}.structure must be a file path, got {structure!r}")
            structure = None
        else:
            structure = resolve_path(structure, base)
            if not os.path.isfile(structure):
                problems.append(f"{where}.structure: '{structure}' does not exist")
    if procedural is not None and not isinstance(procedural, str):
        problems.append(f"{where}.procedural must be a kind name (string), got {procedural!r}")
    mass, symmetry = table.get("mass_kDa"), table.get("symmetry")
    if mass is not None and (not is_finite_number(mass) or mass <= 0):
        problems.append(f"{where}.mass_kDa must be a positive number, got {mass!r}")
    if symmetry is not None and not isinstance(symmetry, str):
        problems.append(f"{where}.symmetry must be a point group name such as 'C5', got {symmetry!r}")
    if structure is not None and (mass is not None or symmetry is not None):
        problems.append(f"{where}: mass_kDa and symmetry apply to procedural particles, not to a structure")
    n = table.get("n_micrographs")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        problems.append(f"{where}.n_micrographs must be a positive integer, got {n!r}")
    seed = table.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        problems.append(f"{where}.seed must be an integer, got {seed!r}")
    overrides = table.get("config", {})
    if not isinstance(overrides, dict):
        problems.append(f"{where}.config must be a table of simulator settings")
        overrides = {}
    else:
        try:
            simulation_config(overrides)
        except ImportError:
            problems.append(f"{where}: this installation has no simulator (hydrapick.simulation)")
        except (ValueError, TypeError) as exc:
            problems.append(f"{where}.config: {exc}")
    if problems and any(p.startswith(where) for p in problems):
        return None
    return SimulatedSource(n_micrographs=n, structure=structure, procedural=procedural,
                           mass_kDa=float(mass) if mass is not None else None, symmetry=symmetry, seed=seed,
                           config=tuple(sorted((k, _freeze(v)) for k, v in overrides.items())))


def simulation_config(overrides: dict[str, Any] | Sequence[tuple[str, Any]]):
    """`hydrapick.config.SimulationConfig` with ``overrides`` (unknown keys rejected)."""
    from ..config import SimulationConfig, from_dict

    return from_dict(SimulationConfig, dict(overrides), where="simulator config")


def simulate_source(name: str, source: SimulatedSource, diameter_A: float | None,
                    ) -> Iterator[tuple[str, str, np.ndarray, float, float, Picks]]:
    """Make the micrographs of the simulated dataset ``name``, one at a time.

    Yields ``(key, source label, image, pixel_size_A, diameter_A, picks)`` per micrograph, keys
    ``NAME_0000``, ``NAME_0001``, ...; ``diameter_A`` overrides the particle's own diameter.
    """
    from .. import simulation as simulate

    config = simulation_config(source.config)
    name_seed = zlib.crc32(name.encode())
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
    for i in range(source.n_micrographs):
        sim = simulate.simulate_micrograph(config, np.random.default_rng([source.seed, name_seed, i]),
                                           structure=structure)
        yield (f"{name}_{i:04d}", f"simulated:{name}/{i}", sim.image, float(sim.pixel_size_A),
               diameter_A or float(sim.diameter_A), sim.picks)


def resolve_path(entry: str, base: Path) -> str:
    """``entry`` with ``~`` expanded, relative to ``base`` unless absolute."""
    expanded = os.path.expanduser(entry)
    return expanded if os.path.isabs(expanded) else os.path.normpath(str(base / expanded))


def is_finite_number(value: Any) -> bool:
    """A finite int or float (not a bool), as TOML gives numbers."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value
