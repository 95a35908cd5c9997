"""`simulate_dataset`: write labelled micrographs to disk with a manifest of every parameter.

Layout::

    out_dir/micrographs/sim_00000.mrc      float32 counts, pixel size in the header
    out_dir/coordinates/sim_00000.star     RELION per-micrograph coordinates (labelled particles)
    out_dir/particles/sim_00000.star       every placed particle: position, view, in-plane angle,
                                           aggregate, labelled or why not (see the label policy)
    out_dir/manifest.toml                  the configuration, the structure and, per micrograph, its
                                           seed, pixel size, diameter and every drawn parameter

Every micrograph has its own seed (recorded), so any one of them can be re-made alone with
``simulate_micrograph(config, seed, structure)``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np
import tomli_w

from ..config import SimulationConfig, to_dict
from ..io import write_coordinates, write_micrograph
from ..io.atomic import write_text
from ..version import __version__
from .micrograph import resolve_structure, simulate_micrograph, view_bank_for
from .structures import Structure

log = logging.getLogger(__name__)


def micrograph_seed(seed: int, index: int) -> int:
    """The seed of micrograph ``index`` in a dataset made with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1, np.uint32)[0])


def plain(value):
    """Convert numpy scalars/arrays, tuples and paths to TOML-friendly values; drop None from dicts."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value if v is not None]
    if isinstance(value, np.ndarray):
        return plain(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, Path):
        return str(value)
    return value


def _write_toml(path: Path, data: dict) -> None:
    write_text(path, tomli_w.dumps(plain(data)))


# Columns of the all-particles table: RELION names where RELION has one.
_PARTICLE_COLUMNS = (("_rlnCoordinateX", "x_px", "{:.3f}"), ("_rlnCoordinateY", "y_px", "{:.3f}"),
                     ("_rlnAnglePsi", "psi_deg", "{:.2f}"), ("_hydrapickView", "view", "{:d}"),
                     ("_hydrapickAggregate", "aggregate", "{:d}"), ("_hydrapickReason", "reason", "{}"))


def write_particle_table(path: Path, particles: dict) -> None:
    """Every placed particle of one micrograph as a STAR table (atomic).

    ``_hydrapickReason`` is ``picked`` for labelled particles, else why not (edge, carbon, contamination,
    aggregate, overlap); ``_hydrapickView`` indexes the structure's projection bank; ``_hydrapickAggregate``
    is -1 for free particles.
    """
    lines = ["", "# version 30001", "", "data_particles", "", "loop_"]
    lines += [f"{name} #{i + 1}" for i, (name, _, _) in enumerate(_PARTICLE_COLUMNS)]
    for row in zip(*(particles[key] for _, key, _ in _PARTICLE_COLUMNS), strict=True):
        cells = [fmt.format(v if not (key == "reason" and v == "") else "picked")
                 for (_, key, fmt), v in zip(_PARTICLE_COLUMNS, row, strict=True)]
        lines.append(" ".join(cells))
    write_text(path, "\n".join(lines) + "\n")


def simulate_dataset(out_dir: str | os.PathLike, n: int, config: SimulationConfig | None = None,
                     structure: Structure | str | os.PathLike | None = None, seed: int = 0,
                     progress: Callable[[int, int], None] | None = None, *,
                     per_micrograph_structure: bool = False, prefix: str = "sim",
                     extra: dict | None = None) -> Path:
    """Simulate ``n`` micrographs into ``out_dir`` and return the manifest's path.

    Parameters
    ----------
    out_dir : folder to create/fill (existing files of the same names are replaced).
    n : number of micrographs.
    config : `SimulationConfig()` when None.
    structure : a `Structure`, a PDB/mmCIF path, or None: one procedural particle drawn from ``seed`` for
        the whole dataset (like one specimen), or a new one per micrograph with
        ``per_micrograph_structure``.
    seed : dataset seed; micrograph ``i`` uses `micrograph_seed(seed, i)`.
    progress : called as ``progress(done, n)`` after each micrograph.
    prefix : file-name prefix (``<prefix>_00000``).
    extra : more top-level manifest entries (e.g. the command line).

    Raises
    ------
    ValueError
        ``n`` < 1.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    config = config or SimulationConfig()
    out = Path(out_dir)
    (out / "micrographs").mkdir(parents=True, exist_ok=True)
    (out / "coordinates").mkdir(parents=True, exist_ok=True)
    (out / "particles").mkdir(parents=True, exist_ok=True)
    shared = None
    if structure is not None or not per_micrograph_structure:
        shared = resolve_structure(structure, config, np.random.default_rng([int(seed), 2**31 - 1]))
        view_bank_for(shared, config)  # the one-off set-up, before the first micrograph
    width = max(5, len(str(n - 1)))
    records = []
    for i in range(n):
        name = f"{prefix}_{i:0{width}d}"
        s = micrograph_seed(seed, i)
        sim = simulate_micrograph(config, s, shared, name=name)
        mrc = out / "micrographs" / f"{name}.mrc"
        star = out / "coordinates" / f"{name}.star"
        write_micrograph(mrc, sim.image, sim.pixel_size_A)
        write_coordinates(sim.picks, star, "star", combined=False)
        params = dict(sim.params)
        placed = params.pop("particles")
        write_particle_table(out / "particles" / f"{name}.star", placed)
        reasons = [r or "picked" for r in placed["reason"]]
        params["particles"] = {"n_placed": placed["n_placed"], "n_labelled": placed["n_labelled"],
                               "by_reason": {r: reasons.count(r) for r in sorted(set(reasons))},
                               "table": f"particles/{name}.star"}
        records.append({"name": name, "seed": s, "micrograph": f"micrographs/{name}.mrc",
                        "coordinates": f"coordinates/{name}.star", "pixel_size_A": sim.pixel_size_A,
                        "diameter_A": sim.diameter_A, "diameter_px": sim.diameter_px,
                        "n_particles": len(sim.picks), "params": params})
        log.info("%s: %d labelled particles, %.3f Å/px", name, len(sim.picks), sim.pixel_size_A)
        if progress is not None:
            progress(i + 1, n)
    manifest = {
        "simulation": {
            "hydrapick_version": __version__,
            "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "seed": int(seed),
            "n_micrographs": n,
            "structure": shared.summary() if shared is not None else "procedural, one per micrograph",
            "config": to_dict(config),
            **(extra or {}),
        },
        "micrograph": records,
    }
    path = out / "manifest.toml"
    _write_toml(path, manifest)
    return path
