"""Simulator speed: per-structure set-up and time per micrograph.

For each structure (procedural ones always; 4hhb and 4v1w from ../shared when present) it reports the
time to build or read the structure, the one-off set-up (its projection bank: ``--views`` orientations
at every pixel size the configuration can draw), and the time per micrograph of ``--size`` pixels with
``--particles`` particles, everything else drawn from the default `SimulationConfig` (wall clock, and
CPU time of the process: on a shared machine the wall clock also measures the other users).

    python benchmarks/simulate_speed.py                 # 1024 x 1024, 100 particles, 10 micrographs each
    python benchmarks/simulate_speed.py --n 3 --size 512
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from hydrapick.config import SimulationConfig
from hydrapick.simulation import clear_cache, load_structure, procedural_structure, simulate_micrograph
from hydrapick.simulation.micrograph import view_bank_for

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "structures"


def structures():
    yield "procedural globular 150 kDa", lambda: procedural_structure("globular", 1, mass_kDa=150)
    yield "procedural D5 assembly 600 kDa", lambda: procedural_structure("dihedral", 2, mass_kDa=600,
                                                                          symmetry="D5")
    yield "procedural ribosome 3 MDa", lambda: procedural_structure("ribosome", 3, mass_kDa=3000)
    for name in ("4hhb.pdb", "4v1w.cif"):
        if (SHARED / name).exists():
            yield f"{name} (../shared)", lambda name=name: load_structure(SHARED / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=10, help="micrographs per structure")
    parser.add_argument("--size", type=int, default=1024, help="micrograph side in pixels")
    parser.add_argument("--particles", type=int, default=100, help="particles per micrograph")
    parser.add_argument("--views", type=int, default=256, help="orientations in the projection bank")
    args = parser.parse_args()
    config = SimulationConfig(shape_px=(args.size, args.size), n_particles=args.particles, n_views=args.views)
    table = Table(title=f"simulate_micrograph: {args.size}x{args.size} px, {args.particles} particles, "
                        f"{args.views} views, {args.n} micrographs per structure")
    for col in ("structure", "atoms", "diameter Å", "build/read s", "set-up s", "set-up CPU s", "bank MB",
                "per micrograph s", "max s", "CPU s"):
        table.add_column(col, justify="right" if col != "structure" else "left")
    console = Console(width=150)
    for label, make in structures():
        clear_cache()
        t0 = time.perf_counter()
        structure = make()
        t_build = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        bank = view_bank_for(structure, config)
        t_setup, c_setup = time.perf_counter() - t0, time.process_time() - c0
        times, cpu = [], []
        for seed in range(args.n):
            t0, c0 = time.perf_counter(), time.process_time()
            simulate_micrograph(config, seed, structure)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
        table.add_row(label, f"{structure.n_atoms:,}", f"{structure.diameter_A:.0f}", f"{t_build:.2f}",
                      f"{t_setup:.2f}", f"{c_setup:.2f}", f"{bank.nbytes() / 1e6:.0f}",
                      f"{statistics.mean(times):.3f}", f"{max(times):.3f}", f"{statistics.mean(cpu):.3f}")
        console.print(f"done: {label}")
    console.print(table)


if __name__ == "__main__":
    main()
