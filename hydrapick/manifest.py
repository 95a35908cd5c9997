"""The training manifest: a TOML file naming each dataset's micrographs, coordinates and particle size.

`read_manifest` parses and checks a manifest without reading any micrograph: unknown keys, types,
positive sizes, globs that match nothing, missing files and micrographs named in two splits are all
reported at once in one `ManifestError`. Paths are resolved against the manifest's folder. A dataset is
either files on disk or ``simulated`` (made by `hydrapick.simulation` when the data are loaded). Every key is
documented in docs/training.md; loading the data is `hydrapick.data.load_datasets`.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

from .picks import micrograph_key

SPLITS = ("train", "valid", "test")
_DATASET_KEYS = {
    "micrographs", "coordinates", "coordinate_format", "flip_y", "diameter_A", "pixel_size_A",
    "train", "valid", "test", "allow_empty", "weight", "simulated",
}
_SIMULATED_KEYS = {"structure", "procedural", "mass_kDa", "symmetry", "n_micrographs", "seed", "config"}
_TOP_KEYS = {"datasets", "valid_fraction", "test_fraction", "split_seed"}
_NAME = re.compile(r"^[A-Za-z0-9_\-+]+$")
_GLOB_CHARS = set("*?[")
MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".mrc.gz", ".mrc.bz2")


class ManifestError(ValueError):
    """A manifest with problems; ``problems`` lists every one (the message shows them all)."""

    def __init__(self, path: str | os.PathLike, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        n = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {n} problem{'s' if n != 1 else ''}:\n{lines}")


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


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a manifest, paths resolved against the manifest's folder (nothing read yet)."""

    name: str
    micrographs: tuple[str, ...] = ()  # entries as given (files, globs, folders, micrograph lists)
    coordinates: tuple[str, ...] = ()  # files, folders or globs
    coordinate_format: str | None = None
    flip_y: bool = False
    diameter_A: float | None = None
    pixel_size_A: float | None = None
    split: tuple[tuple[str, tuple[str, ...]], ...] = ()  # explicit (split, micrograph keys) pairs
    allow_empty: bool = False
    weight: float = 1.0
    simulated: SimulatedSource | None = None

    def explicit_split(self) -> dict[str, tuple[str, ...]]:
        return dict(self.split)


@dataclass(frozen=True)
class Manifest:
    """A parsed training manifest (see docs/training.md for every key)."""

    path: str
    datasets: tuple[DatasetSpec, ...]
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0

    @property
    def names(self) -> list[str]:
        return [d.name for d in self.datasets]


def read_manifest(path: str | os.PathLike) -> Manifest:
    """Parse and check a TOML manifest without reading any micrograph.

    Checks every key, value and path it can without reading data: unknown keys, types, positive sizes,
    globs that match nothing, files that do not exist, and micrographs named in two splits.

    Raises
    ------
    ManifestError
        Listing every problem found.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(path, ["the manifest file does not exist"])
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ManifestError(path, [f"not valid TOML: {exc}"]) from None
    return parse_manifest(raw, base_dir=path.parent, path=str(path))


def parse_manifest(raw: dict[str, Any], base_dir: str | os.PathLike = ".", path: str = "<manifest>",
                   ) -> Manifest:
    """Build a `Manifest` from an already parsed TOML dict (paths relative to ``base_dir``)."""
    problems: list[str] = []
    base = Path(base_dir)
    for key in sorted(set(raw) - _TOP_KEYS):
        problems.append(f"unknown top-level key '{key}' (known: {', '.join(sorted(_TOP_KEYS))})")
    fractions = {}
    for key, default in (("valid_fraction", 0.1), ("test_fraction", 0.1)):
        value = raw.get(key, default)
        if not _is_number(value) or not 0 <= value < 1:
            problems.append(f"{key} must be a number in [0, 1), got {value!r}")
            value = default
        fractions[key] = float(value)
    if fractions["valid_fraction"] + fractions["test_fraction"] >= 1:
        problems.append("valid_fraction + test_fraction must be below 1")
    split_seed = raw.get("split_seed", 0)
    if not isinstance(split_seed, int) or isinstance(split_seed, bool):
        problems.append(f"split_seed must be an integer, got {split_seed!r}")
        split_seed = 0

    tables = raw.get("datasets")
    datasets: list[DatasetSpec] = []
    if not isinstance(tables, dict) or not tables:
        problems.append("no datasets: add at least one [datasets.NAME] table")
    else:
        for name, table in tables.items():
            spec = _parse_dataset(name, table, base, problems)
            if spec is not None:
                datasets.append(spec)
    if problems:
        raise ManifestError(path, problems)
    return Manifest(path=path, datasets=tuple(datasets), valid_fraction=fractions["valid_fraction"],
                    test_fraction=fractions["test_fraction"], split_seed=split_seed)


def _parse_dataset(name: str, table: Any, base: Path, problems: list[str]) -> DatasetSpec | None:
    where = f"datasets.{name}"
    n_before = len(problems)
    if not _NAME.match(name):
        problems.append(f"{where}: dataset name must use letters, digits, '_', '-' or '+' only")
    if name == "generic":
        problems.append(f"{where}: 'generic' is reserved for the generic head")
    if not isinstance(table, dict):
        problems.append(f"{where}: expected a table of settings")
        return None
    for key in sorted(set(table) - _DATASET_KEYS):
        problems.append(f"{where}: unknown key '{key}' (known: {', '.join(sorted(_DATASET_KEYS))})")

    diameter = table.get("diameter_A")
    if diameter is not None and (not _is_number(diameter) or diameter <= 0):
        problems.append(f"{where}.diameter_A must be a positive number of Å, got {diameter!r}")
    pixel = table.get("pixel_size_A")
    if pixel is not None and (not _is_number(pixel) or pixel <= 0):
        problems.append(f"{where}.pixel_size_A must be a positive number of Å, got {pixel!r}")
    weight = table.get("weight", 1.0)
    if not _is_number(weight) or weight <= 0:
        problems.append(f"{where}.weight must be a positive number, got {weight!r}")
    for key in ("flip_y", "allow_empty"):
        if not isinstance(table.get(key, False), bool):
            problems.append(f"{where}.{key} must be true or false, got {table[key]!r}")
    fmt = table.get("coordinate_format")
    if fmt is not None and not isinstance(fmt, str):
        problems.append(f"{where}.coordinate_format must be a string, got {fmt!r}")

    split: list[tuple[str, tuple[str, ...]]] = []
    seen: dict[str, str] = {}
    for part in SPLITS:
        if part not in table:
            continue
        names = _string_list(table[part], f"{where}.{part}", problems)
        keys = tuple(micrograph_key(n) for n in names)
        for key in keys:
            if key in seen and seen[key] != part:
                problems.append(f"{where}: micrograph '{key}' is in both '{seen[key]}' and '{part}'")
            seen[key] = part
        split.append((part, keys))

    simulated = None
    micrographs: tuple[str, ...] = ()
    coordinates: tuple[str, ...] = ()
    if "simulated" in table:
        simulated = _parse_simulated(table["simulated"], where, base, problems)
        for key in ("micrographs", "coordinates", "coordinate_format", "pixel_size_A", "flip_y"):
            if key in table:
                problems.append(f"{where}: '{key}' does not apply to a simulated dataset")
        if simulated is not None:
            names = {f"{name}_{i:04d}" for i in range(simulated.n_micrographs)}
            unknown = [k for _, keys in split for k in keys if k not in names]
            if unknown:
                problems.append(f"{where}: no simulated micrograph named {', '.join(unknown)} (they are "
                                f"{name}_0000 to {name}_{simulated.n_micrographs - 1:04d})")
    else:
        if "micrographs" not in table:
            problems.append(f"{where}: 'micrographs' is missing (a glob, folder, file or list of them)")
        else:
            micrographs = tuple(_resolve(e, base) for e in _string_list(table["micrographs"],
                                                                          f"{where}.micrographs", problems))
            for entry in micrographs:
                check_micrograph_entry(entry, where, problems)
        if "coordinates" not in table:
            problems.append(f"{where}: 'coordinates' is missing (a file, folder, glob or list of them)")
        else:
            coordinates = tuple(_resolve(e, base) for e in _string_list(table["coordinates"],
                                                                          f"{where}.coordinates", problems))
            for entry in coordinates:
                if is_glob(entry) and not os.path.exists(entry):
                    if not glob.glob(entry):
                        problems.append(f"{where}.coordinates: '{entry}' matches no files")
                elif not os.path.exists(entry):
                    problems.append(f"{where}.coordinates: '{entry}' does not exist")
        if diameter is None:
            problems.append(f"{where}: 'diameter_A' (particle diameter in Å) is missing")
    if len(problems) > n_before:
        return None
    return DatasetSpec(
        name=name, micrographs=micrographs, coordinates=coordinates, coordinate_format=fmt,
        flip_y=bool(table.get("flip_y", False)),
        diameter_A=float(diameter) if diameter is not None else None,
        pixel_size_A=float(pixel) if pixel is not None else None, split=tuple(split),
        allow_empty=bool(table.get("allow_empty", False)), weight=float(weight), simulated=simulated)


def _parse_simulated(table: Any, where: str, base: Path, problems: list[str]) -> SimulatedSource | None:
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
            structure = _resolve(structure, base)
            if not os.path.isfile(structure):
                problems.append(f"{where}.structure: '{structure}' does not exist")
    if procedural is not None and not isinstance(procedural, str):
        problems.append(f"{where}.procedural must be a kind name (string), got {procedural!r}")
    mass, symmetry = table.get("mass_kDa"), table.get("symmetry")
    if mass is not None and (not _is_number(mass) or mass <= 0):
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
    from .config import SimulationConfig, from_dict

    return from_dict(SimulationConfig, dict(overrides), where="simulator config")


def check_micrograph_entry(entry: str, where: str, problems: list[str]) -> None:
    """Add a problem when ``entry`` (file, folder or glob) names no MRC micrograph."""
    if is_glob(entry) and not os.path.exists(entry):
        if not any(m.lower().endswith(MICROGRAPH_SUFFIXES) for m in glob.glob(entry, recursive=True)):
            problems.append(f"{where}.micrographs: '{entry}' matches no MRC micrographs")
    elif os.path.isdir(entry):
        if not any(p.name.lower().endswith(MICROGRAPH_SUFFIXES) for p in Path(entry).iterdir()):
            problems.append(f"{where}.micrographs: folder '{entry}' holds no MRC micrographs")
    elif not os.path.exists(entry):
        problems.append(f"{where}.micrographs: '{entry}' does not exist")


def _string_list(value: Any, where: str, problems: list[str]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    problems.append(f"{where} must be a string or a list of strings, got {value!r}")
    return []


def _resolve(entry: str, base: Path) -> str:
    expanded = os.path.expanduser(entry)
    return expanded if os.path.isabs(expanded) else os.path.normpath(str(base / expanded))


def is_glob(text: str) -> bool:
    """Whether ``text`` holds glob wildcards."""
    return any(c in _GLOB_CHARS for c in text)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value
