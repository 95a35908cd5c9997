"""The training manifest: a TOML file naming each dataset's micrographs, coordinates and particle size.

`read_manifest` parses and checks a manifest without reading any micrograph: unknown keys, types,
positive sizes, globs that match nothing, missing files and micrographs named in two splits are all
reported at once in one `ManifestError`. Paths are resolved against the manifest's folder. A dataset is
either files on disk or ``simulated`` (made by `hydrapick.simulation` when the data are loaded).
`resolve_dataset_files` then turns a file-based dataset into its micrographs, their coordinates and
pixel sizes, and its train/valid/test split (`hydrapick.training.splits`), reading only headers and
coordinate files.
Every key is documented in docs/training.md; loading the data is `hydrapick.training.datasets`.
"""

from __future__ import annotations

import glob
import logging
import os
import re
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..io.coordinates import check_one_file_per_micrograph
from ..io.inputs import MICROGRAPH_KINDS, MICROGRAPH_SUFFIXES, is_micrograph_list
from ..picks import Picks, micrograph_key
from .simulated import SimulatedSource, is_finite_number, parse_simulated, resolve_path
from .splits import SPLITS, split_names

log = logging.getLogger(__name__)

_DATASET_KEYS = {
    "micrographs", "coordinates", "ignore_coordinates", "coordinate_format", "flip_y", "diameter_A",
    "pixel_size_A", "train", "valid", "test", "allow_empty", "weight", "simulated",
}
_TOP_KEYS = {"datasets", "valid_fraction", "test_fraction", "split_seed"}
_NAME = re.compile(r"^[A-Za-z0-9_\-+]+$")
_GLOB_CHARS = set("*?[")


class ManifestError(ValueError):
    """A manifest with problems; ``problems`` lists every one (the message shows them all)."""

    def __init__(self, path: str | os.PathLike, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        n = len(self.problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"{self.path}: {n} problem{'s' if n != 1 else ''}:\n{lines}")


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset of a manifest, paths resolved against the manifest's folder (nothing read yet)."""

    name: str
    micrographs: tuple[str, ...] = ()  # entries as given (files, globs, folders, micrograph lists)
    coordinates: tuple[str, ...] = ()  # files, folders or globs
    ignore_coordinates: tuple[str, ...] = ()  # places that are neither particle nor background
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

    @property
    def split_options(self) -> dict[str, Any]:
        """The keyword arguments of `split_names` (and `resolve_dataset_files`) this manifest sets."""
        return {"valid_fraction": self.valid_fraction, "test_fraction": self.test_fraction,
                "seed": self.split_seed}


@dataclass(frozen=True)
class LabelledFile:
    """One micrograph file of a dataset with its particles (in the micrograph's pixels, as read)."""

    path: str
    pixel_size_A: float
    picks: Picks
    ignore: Picks = field(default_factory=Picks.empty)  # places left out of the loss (``ignore_coordinates``)


@dataclass(frozen=True)
class DatasetFiles:
    """A file-based dataset resolved: its train and valid micrographs by key, and its split (keys)."""

    labelled: dict[str, LabelledFile]
    split: dict[str, list[str]]


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
        if not is_finite_number(value) or not 0 <= value < 1:
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
    if diameter is not None and (not is_finite_number(diameter) or diameter <= 0):
        problems.append(f"{where}.diameter_A must be a positive number of Å, got {diameter!r}")
    pixel = table.get("pixel_size_A")
    if pixel is not None and (not is_finite_number(pixel) or pixel <= 0):
        problems.append(f"{where}.pixel_size_A must be a positive number of Å, got {pixel!r}")
    weight = table.get("weight", 1.0)
    if not is_finite_number(weight) or weight <= 0:
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
    ignore_coordinates: tuple[str, ...] = ()
    if "simulated" in table:
        simulated = parse_simulated(table["simulated"], where, base, problems)
        for key in ("micrographs", "coordinates", "ignore_coordinates", "coordinate_format", "pixel_size_A",
                    "flip_y"):
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
            micrographs = tuple(resolve_path(e, base) for e in _string_list(table["micrographs"],
                                                                          f"{where}.micrographs", problems))
            for entry in micrographs:
                check_micrograph_entry(entry, where, problems)
        if "coordinates" not in table:
            problems.append(f"{where}: 'coordinates' is missing (a file, folder, glob or list of them)")
        else:
            coordinates = _coordinate_entries(table, "coordinates", where, base, problems)
        if "ignore_coordinates" in table:
            ignore_coordinates = _coordinate_entries(table, "ignore_coordinates", where, base, problems)
        if diameter is None:
            problems.append(f"{where}: 'diameter_A' (particle diameter in Å) is missing")
    if len(problems) > n_before:
        return None
    return DatasetSpec(
        name=name, micrographs=micrographs, coordinates=coordinates, ignore_coordinates=ignore_coordinates,
        coordinate_format=fmt,
        flip_y=bool(table.get("flip_y", False)),
        diameter_A=float(diameter) if diameter is not None else None,
        pixel_size_A=float(pixel) if pixel is not None else None, split=tuple(split),
        allow_empty=bool(table.get("allow_empty", False)), weight=float(weight), simulated=simulated)


def _coordinate_entries(table: dict[str, Any], key: str, where: str, base: Path, problems: list[str],
                        ) -> tuple[str, ...]:
    """The paths of a coordinates key (file, folder, glob or a list of them), each checked to exist."""
    entries = tuple(resolve_path(e, base) for e in _string_list(table[key], f"{where}.{key}", problems))
    for entry in entries:
        if is_glob(entry) and not os.path.exists(entry):
            if not glob.glob(entry):
                problems.append(f"{where}.{key}: '{entry}' matches no files")
        elif not os.path.exists(entry):
            problems.append(f"{where}.{key}: '{entry}' does not exist")
    return entries


def check_micrograph_entry(entry: str, where: str, problems: list[str]) -> None:
    """Add a problem when ``entry`` (file, folder or glob) names no micrograph (`MICROGRAPH_SUFFIXES`)."""
    if is_glob(entry) and not os.path.exists(entry):
        if not expand_micrographs(entry):
            problems.append(f"{where}.micrographs: '{entry}' matches no {MICROGRAPH_KINDS} micrographs")
    elif os.path.isdir(entry):
        if not expand_micrographs(entry):
            problems.append(f"{where}.micrographs: folder '{entry}' holds no {MICROGRAPH_KINDS} micrographs")
    elif not os.path.exists(entry):
        problems.append(f"{where}.micrographs: '{entry}' does not exist")


def _string_list(value: Any, where: str, problems: list[str]) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    problems.append(f"{where} must be a string or a list of strings, got {value!r}")
    return []


def is_glob(text: str) -> bool:
    """Whether ``text`` holds glob wildcards."""
    return any(c in _GLOB_CHARS for c in text)


# --- files ----------------------------------------------------------------------------------------

def resolve_dataset_files(spec: DatasetSpec, problems: list[str], *, valid_fraction: float = 0.1,
                          test_fraction: float = 0.1, seed: int = 0, where: str | None = None,
                          ) -> DatasetFiles:
    """Cheap pass over one file-based dataset: list micrographs, read coordinates, read headers, split.

    Every problem found (micrographs without coordinates, coordinates outside their micrograph, missing
    pixel sizes, explicit split names that match no micrograph, ...) is appended to ``problems``,
    prefixed by ``where`` (default ``datasets.NAME``); the caller raises them in one `ManifestError`.
    Test micrographs are only named in the split, not read.
    """
    from ..io import FormatError, read_micrograph
    from ..io.mrc import no_pixel_size

    where = where or f"datasets.{spec.name}"
    paths: dict[str, str] = {}
    for entry in spec.micrographs:
        for path in expand_micrographs(entry):
            key = micrograph_key(path)
            if key in paths and paths[key] != path:
                problems.append(f"{where}: micrographs '{paths[key]}' and '{path}' have the same name "
                                f"'{key}'")
            paths[key] = path
    # micrographs whose own coordinate file holds no particles
    picks, labelled_empty = _read_coordinate_entries(spec.coordinates, spec.coordinate_format,
                                                     f"{where}.coordinates", problems)
    ignore, _ = _read_coordinate_entries(spec.ignore_coordinates, spec.coordinate_format,
                                         f"{where}.ignore_coordinates", problems)
    keys = np.array([micrograph_key(m) for m in picks.micrograph], dtype=object)
    ignore_keys = np.array([micrograph_key(m) for m in ignore.micrograph], dtype=object)
    known = set(paths)
    for what, found in (("coordinates", keys), ("ignore_coordinates", ignore_keys)):
        orphans = sorted(set(found.tolist()) - known)
        if orphans:
            log.warning("%s: %s for %d micrograph(s) not in the micrograph list are ignored (%s)", where,
                        what, len(orphans), ", ".join(orphans[:5]) + (", ..." if len(orphans) > 5 else ""))

    explicit = spec.explicit_split()
    for part, listed in explicit.items():
        missing = [k for k in listed if k not in known]
        if missing:
            problems.append(f"{where}.{part}: no micrograph named {', '.join(missing)}")
    split = split_names(list(paths), spec.name, valid_fraction=valid_fraction, test_fraction=test_fraction,
                        seed=seed, explicit=explicit)
    if not split["train"]:
        problems.append(f"{where}: no training micrographs left after the split")

    labelled: dict[str, LabelledFile] = {}
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
            problems.append(f"{where}: {no_pixel_size(path)}; give it (pixel_size_A in a manifest, --apix "
                            "on the command line)")
            continue
        mine_ignored = ignore[ignore_keys == key] if len(ignore) else Picks.empty()
        h, w = mic.shape
        if spec.flip_y:
            mine, mine_ignored = (p.flip_y(h) if len(p) else p for p in (mine, mine_ignored))
        for what, these in (("coordinate", mine), ("ignore coordinate", mine_ignored)):
            outside = (these.x < -0.5) | (these.x > w - 0.5) | (these.y < -0.5) | (these.y > h - 0.5)
            if outside.any():
                problems.append(f"{where}: {int(outside.sum())} {what}(s) of '{key}' lie outside the "
                                f"{w}x{h} micrograph (wrong file, or y flipped? see flip_y)")
        labelled[key] = LabelledFile(path, float(mic.pixel_size_A), mine, mine_ignored)
    if empty:
        empty.sort()
        shown = ", ".join(empty[:10]) + (f" and {len(empty) - 10} more" if len(empty) > 10 else "")
        problems.append(f"{where}: {len(empty)} micrograph(s) without coordinates: {shown} (if they "
                        "truly hold no particles, give each an empty coordinate file or set allow_empty = "
                        "true)")
    return DatasetFiles(labelled, split)


def _read_coordinate_entries(entries: Sequence[str], coordinate_format: str | None, where: str,
                             problems: list[str]) -> tuple[Picks, set[str]]:
    """The coordinates of every entry of a coordinates key, and the micrographs given an empty file.

    One micrograph's coordinates coming from two entries, or under two names, is a problem (they would
    be merged silently).
    """
    from ..io import FormatError

    parts, empty, sources = [], set(), []
    for entry in entries:
        try:
            picks, empty_files = _read_coordinate_entry(entry, coordinate_format)
        except (FormatError, ValueError, OSError) as exc:
            problems.append(f"{where}: {exc}")
            continue
        parts.append(picks)
        empty.update(empty_files)
        sources.append((f"'{entry}'", list(picks.micrograph) + empty_files))
    try:
        check_one_file_per_micrograph(sources)
    except FormatError as exc:
        problems.append(f"{where}: {exc}")
    return Picks.concat(parts), empty


def _read_coordinate_entry(entry: str, coordinate_format: str | None) -> tuple[Picks, list[str]]:
    """Coordinates of one ``coordinates`` entry (file, folder or glob), and the micrographs whose own
    per-micrograph file in a folder or glob holds no particle: an empty file says "no particles here"
    (as in `hydrapick evaluate`), a missing one is an error unless ``allow_empty``."""
    from ..io import read_coordinate_folder_with_empty, read_coordinates

    if os.path.isdir(entry) or (is_glob(entry) and not os.path.exists(entry)):
        return read_coordinate_folder_with_empty(entry, coordinate_format)
    return read_coordinates(entry, coordinate_format), []


def expand_micrographs(entry: str) -> list[str]:
    """The micrograph files of one ``micrographs`` entry: a glob, a folder, a list file or a file."""
    if is_glob(entry) and not os.path.exists(entry):
        return sorted(m for m in glob.glob(entry, recursive=True) if m.lower().endswith(MICROGRAPH_SUFFIXES))
    if os.path.isdir(entry):
        return sorted(str(p) for p in Path(entry).iterdir() if p.name.lower().endswith(MICROGRAPH_SUFFIXES))
    if is_micrograph_list(entry):
        from ..io import read_micrograph_list

        return [p for p, _ in read_micrograph_list(entry)]
    return [entry]


