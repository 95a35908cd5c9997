"""``hydrapick simulate``: labelled synthetic micrographs (MRC, RELION STAR and a manifest)."""

from __future__ import annotations

import sys

import click

from .group import cli
from .options import quiet_option


class _RangeType(click.ParamType):
    """A number or a range 'LO-HI' (also 'LO:HI' or 'LO,HI') of non-negative numbers."""

    name = "X or LO-HI"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        import re

        text = str(value).strip()
        number = r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
        m = re.fullmatch(rf"{number}\s*(?:(?:-|:|,|\.\.)\s*{number})?", text)
        if not m:
            self.fail(f"{value!r} is not a number or a range like 1.0-3.5", param, ctx)
        lo = float(m.group(1))
        hi = float(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            self.fail(f"range {value!r} has its low end above its high end", param, ctx)
        return (lo, hi)


_RANGE = _RangeType()


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size like 1024 or 1024x768 (rows x columns)") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 32:
        raise click.BadParameter(f"{text!r}: give one or two sizes of at least 32 pixels")
    return sizes[0], sizes[1]


@cli.command()
@click.option("-n", "n_micrographs", type=click.IntRange(min=1), required=True, help="Micrographs to make.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder: micrographs/*.mrc, coordinates/*.star, particles/*.star, manifest.toml.")
@click.option("--structure", "structure_path", type=click.Path(dir_okay=False),
              help="PDB or mmCIF model of the particle (default: a procedural particle).")
@click.option("--assembly", default="auto", show_default=True,
              help="With --structure: biological assembly to build ('auto': the first one defined, "
                   "'none': the deposited model, or an assembly name).")
@click.option("--chain", "chains", multiple=True, help="With --structure: keep only this chain (repeatable).")
@click.option("--symmetry", help="Build a point-group assembly (C5, D7, T, O, I) from the structure's chains "
                                 "or from a procedural subunit.")
@click.option("--shape", "kind", default=None,
              help="Procedural particle kind: random, globular, elongated, flat, multidomain, cyclic, "
                   "dihedral, tetrahedral, octahedral, icosahedral, ring, membrane, ribosome.")
@click.option("--mass", "mass_kDa", type=float, help="Procedural particle mass in kDa (default: drawn).")
@click.option("--per-micrograph-structure", is_flag=True,
              help="A different procedural particle on every micrograph (default: one for the dataset).")
@click.option("--size", "size", default=None, help="Micrograph size in pixels: 1024 or ROWSxCOLUMNS.")
@click.option("--pixel-size", "pixel_size", type=_RANGE, help="Pixel size in Å, or a range to draw from.")
@click.option("--diameter-px", "diameter_px", type=_RANGE,
              help="Particle diameter in pixels to aim for when drawing the pixel size (range).")
@click.option("--dose", type=_RANGE, help="Exposure in e/Å², or a range.")
@click.option("--defocus", type=_RANGE, help="Defocus in µm (underfocus), or a range.")
@click.option("--particles", "n_particles", type=click.IntRange(min=0),
              help="Particles per micrograph (default: drawn from the coverage range).")
@click.option("--coverage", type=_RANGE, help="Fraction of the area covered by particles, or a range.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file of SimulationConfig settings (command-line options override it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed: same seed, same output.")
@click.option("--force", is_flag=True, help="Write into a folder that already holds a simulated dataset.")
@quiet_option("No progress bar or summary.")
def simulate(n_micrographs: int, out_dir: str, structure_path: str | None, assembly: str,
             chains: tuple[str, ...], symmetry: str | None, kind: str | None, mass_kDa: float | None,
             per_micrograph_structure: bool, size: str | None, pixel_size, diameter_px, dose, defocus,
             n_particles: int | None, coverage, config_path: str | None, seed: int, force: bool,
             quiet: bool) -> None:
    """Make labelled synthetic micrographs (MRC + RELION STAR + manifest).

    Without --structure the particle is procedural (no files needed). Every condition not fixed by an
    option is drawn from the documented ranges (docs/simulate.md); the same seed gives the same dataset.

    \b
    Examples:
      hydrapick simulate -n 20 -o sim/
      hydrapick simulate --structure 4hhb.pdb -n 20 -o sim/ --pixel-size 1.0 --dose 40
      hydrapick simulate --shape ribosome -n 10 -o ribo/ --pixel-size 5.36 --defocus 1-3
    """
    import numpy as np
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from ..simulation import StructureError, simulate

    settings: dict = {}
    if size:
        settings["shape_px"] = _parse_size(size)
    for key, rng in (("pixel_size_A_range", pixel_size), ("particle_diameter_px_range", diameter_px),
                     ("dose_e_per_A2_range", dose), ("defocus_um_range", defocus),
                     ("coverage_range", coverage)):
        if rng is not None:
            settings[key] = rng
    if n_particles is not None:
        settings["n_particles"] = n_particles
    command = "hydrapick " + " ".join(sys.argv[1:]) if sys.argv else "hydrapick simulate"

    console = Console(stderr=True)
    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("simulate", total=n_micrographs)
        try:
            dataset = simulate(out_dir, n_micrographs, config=config_path, settings=settings,
                               structure=structure_path, assembly=assembly, chains=chains,
                               symmetry=symmetry, shape=kind, mass_kDa=mass_kDa,
                               per_micrograph_structure=per_micrograph_structure, seed=seed, force=force,
                               extra={"command": command},
                               progress=lambda done, total: bar.update(task, completed=done))
        except (StructureError, ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    if quiet:
        return
    from rich.table import Table

    records = dataset.micrographs
    table = Table(title=f"simulated {len(records)} micrographs -> {dataset.out_dir}", show_header=True)
    for col in ("", "min", "median", "max"):
        table.add_column(col, justify="right")
    rows = (("pixel size (Å)", "pixel_size_A", "{:.3f}"), ("diameter (Å)", "diameter_A", "{:.1f}"),
            ("diameter (px)", "diameter_px", "{:.1f}"), ("labelled particles", "n_particles", "{:.0f}"))
    for label, key, fmt in rows:
        vals = [float(r[key]) for r in records]
        table.add_row(label, *(fmt.format(v) for v in (min(vals), float(np.median(vals)), max(vals))))
    console.print(table)
    console.print(f"manifest: {dataset.manifest}")
