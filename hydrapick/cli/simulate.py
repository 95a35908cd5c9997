"""``hydrapick simulate``: labelled synthetic micrographs (MRC, RELION STAR and a manifest)."""

from __future__ import annotations

import sys

import click

from .group import cli


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
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
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
    from pathlib import Path

    import numpy as np
    from rich.console import Console

    from ..config import SimulationConfig, from_dict
    from ..simulation import load_structure, procedural_structure, simulate_dataset, symmetric_assembly
    from ..simulation.structures import StructureError

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    console = Console(stderr=True)
    values: dict = {}
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                values.update(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise click.ClickException(f"cannot read config '{config_path}': {exc}") from None
    if size:
        values["shape_px"] = _parse_size(size)
    for key, rng in (("pixel_size_A_range", pixel_size), ("particle_diameter_px_range", diameter_px),
                     ("dose_e_per_A2_range", dose), ("defocus_um_range", defocus),
                     ("coverage_range", coverage)):
        if rng is not None:
            values[key] = rng
    if n_particles is not None:
        values["n_particles"] = n_particles
    if kind:
        values["structure_kind"] = kind
    if mass_kDa is not None:
        values["structure_mass_kDa_range"] = (mass_kDa, mass_kDa)
    try:
        config = from_dict(SimulationConfig, values, where=config_path or "simulate options")
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None

    out = Path(out_dir)
    if (out / "manifest.toml").exists() and not force:
        raise click.ClickException(f"'{out}' already holds a simulated dataset (manifest.toml); "
                                   "use --force to overwrite it or choose another folder")
    if structure_path is not None and (kind or mass_kDa is not None or per_micrograph_structure):
        raise click.ClickException("--shape, --mass and --per-micrograph-structure are for procedural "
                                   "particles; leave them out with --structure")
    structure = None
    try:
        if structure_path is not None:
            structure = load_structure(structure_path, chains=list(chains) or None,
                                       assembly=None if assembly.lower() == "none" else assembly)
            if symmetry:
                structure = symmetric_assembly(structure, symmetry, seed)
        elif symmetry:
            if per_micrograph_structure:
                raise click.ClickException("--symmetry builds one particle; "
                                           "leave out --per-micrograph-structure")
            structure = procedural_structure(kind or "random", seed, mass_kDa=mass_kDa, symmetry=symmetry)
    except (StructureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    command = "hydrapick " + " ".join(sys.argv[1:]) if sys.argv else "hydrapick simulate"

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("simulate", total=n_micrographs)
        try:
            manifest = simulate_dataset(out, n_micrographs, config, structure=structure, seed=seed,
                                        progress=lambda done, total: bar.update(task, completed=done),
                                        per_micrograph_structure=per_micrograph_structure,
                                        extra={"command": command})
        except (StructureError, ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    if quiet:
        return
    with open(manifest, "rb") as fh:
        records = tomllib.load(fh)["micrograph"]
    from rich.table import Table

    table = Table(title=f"simulated {len(records)} micrographs -> {out}", show_header=True)
    for col in ("", "min", "median", "max"):
        table.add_column(col, justify="right")
    rows = (("pixel size (Å)", "pixel_size_A", "{:.3f}"), ("diameter (Å)", "diameter_A", "{:.1f}"),
            ("diameter (px)", "diameter_px", "{:.1f}"), ("labelled particles", "n_particles", "{:.0f}"))
    for label, key, fmt in rows:
        vals = [float(r[key]) for r in records]
        table.add_row(label, *(fmt.format(v) for v in (min(vals), float(np.median(vals)), max(vals))))
    console.print(table)
    console.print(f"manifest: {manifest}")
