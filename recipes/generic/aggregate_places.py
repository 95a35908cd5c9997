"""Write the simulated corpus's aggregate members as places to ignore, and a manifest that uses them.

The simulator never labels a particle inside an aggregate (its label policy), so a manifest of its
labels teaches the network that a particle with close neighbours on several sides is background. This
script reads every dataset's table of placed particles (``particles/<micrograph>.star``, with
``_hydrapickReason``), writes the members whose reason is ``aggregate`` to ``aggregates/<micrograph>.star``
(an empty file where there are none), and writes a copy of the corpus manifest whose datasets name that
folder as ``ignore_coordinates``: anchors near them are then neither particle nor background.

    python recipes/generic/aggregate_places.py recipes/generic/corpus.toml \
        -o recipes/generic/corpus_aggregates.toml
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path

import numpy as np
import tomli_w

from hydrapick.io import _star, write_coordinates
from hydrapick.picks import Picks

REASON = "_hydrapickReason"


def read_particle_table(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x, y, reason) of every placed particle in one simulator table."""
    table = _star.find_loop(_star.read(path), REASON, path, "a simulator particle table")
    x, y = (np.asarray(_star.floats(table, c, path)) for c in ("_rlnCoordinateX", "_rlnCoordinateY"))
    return x, y, np.asarray(table[REASON], dtype=str)


def write_places(dataset: Path, reason: str) -> tuple[int, int]:
    """Write ``dataset/aggregates`` from ``dataset/particles``; returns (micrographs, places)."""
    tables = sorted((dataset / "particles").glob("*.star"))
    if not tables:
        raise SystemExit(f"{dataset}: no particles/*.star tables (made by `hydrapick simulate`)")
    out = dataset / "aggregates"
    out.mkdir(exist_ok=True)
    places = 0
    for table in tables:
        x, y, why = read_particle_table(table)
        keep = why == reason
        write_coordinates(Picks(table.stem, x[keep], y[keep]), out / table.name)
        places += int(keep.sum())
    return len(tables), places


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("manifest", type=Path, help="the corpus manifest (corpus.toml)")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the manifest to write")
    parser.add_argument("--reason", default="aggregate", help="which unlabelled particles to ignore")
    args = parser.parse_args(argv)
    raw = tomllib.loads(args.manifest.read_text())
    base = args.manifest.parent
    total = 0
    for name, table in raw["datasets"].items():
        coordinates = Path(table["coordinates"])
        dataset = (base / coordinates).parent
        n, places = write_places(dataset, args.reason)
        total += places
        # Relative to the written manifest's folder, as every other path in it.
        table["ignore_coordinates"] = str(coordinates.parent / "aggregates")
        print(f"{name}: {places} {args.reason} places in {n} micrographs")
    header = "".join(line + "\n" for line in args.manifest.read_text().splitlines() if line.startswith("#"))
    note = (f"# Written by recipes/generic/aggregate_places.py from {args.manifest.name}: the same\n"
            f"# datasets, with their simulated {args.reason} members as ignore_coordinates (neither\n"
            "# particle nor background).\n")
    args.out.write_text(note + header + "\n" + tomli_w.dumps(raw))
    print(f"{total} places in all; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
