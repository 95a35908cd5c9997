"""The catalogue of procedural kinds (their mass ranges and how often each is drawn) and the one builder."""

from __future__ import annotations

import math

import numpy as np

from ..structures import Structure
from ..symmetry import parse_symmetry, symmetric_assembly, symmetry_operators
from .membrane import membrane
from .protein import domain, pack, protein, split_mass
from .ribosome import ribosome

# Mass range (kDa) drawn when none is given; chosen to cover what single-particle cryo-EM images.
KIND_MASS_KDA: dict[str, tuple[float, float]] = {
    "globular": (50.0, 400.0),
    "elongated": (60.0, 500.0),
    "flat": (60.0, 500.0),
    "multidomain": (150.0, 1500.0),
    "cyclic": (100.0, 1200.0),
    "dihedral": (150.0, 2000.0),
    "tetrahedral": (250.0, 1500.0),
    "octahedral": (400.0, 2500.0),
    "icosahedral": (1000.0, 6000.0),
    "ring": (200.0, 1500.0),
    "membrane": (100.0, 600.0),
    "ribosome": (1500.0, 4500.0),
}
KINDS: tuple[str, ...] = tuple(KIND_MASS_KDA)
# How often "random" picks each kind: common specimen types more often.
KIND_WEIGHTS = {"globular": 3, "elongated": 1.5, "flat": 1, "multidomain": 2.5, "cyclic": 1.5,
                "dihedral": 1.5, "tetrahedral": 0.5, "octahedral": 0.7, "icosahedral": 0.8, "ring": 1,
                "membrane": 2, "ribosome": 1.5}


def procedural_structure(kind: str = "random", rng: np.random.Generator | int | None = None, *,
                         mass_kDa: float | None = None, symmetry: str | None = None) -> Structure:
    """Generate a pseudo-atomic particle.

    Parameters
    ----------
    kind : one of `KINDS` or "random" (drawn with `KIND_WEIGHTS`).
    rng : generator or seed; the same seed gives the same particle.
    mass_kDa : total mass (kDa); drawn log-uniformly from `KIND_MASS_KDA` when None. The built particle's
        mass is close to, not exactly, this value (it is filled at protein density).
    symmetry : point group for the symmetric kinds ("C5", "D7", ...); drawn when None. Giving a
        symmetry with kind "random" builds that assembly from a procedural subunit.

    Raises
    ------
    ValueError
        Unknown kind, symmetry or a non-positive mass.
    """
    rng = np.random.default_rng(rng)
    kind = kind.lower()
    if kind == "random":
        if symmetry is not None:
            kind = "assembly"
        else:
            names = list(KIND_WEIGHTS)
            w = np.array([KIND_WEIGHTS[k] for k in names])
            kind = str(rng.choice(names, p=w / w.sum()))
    if kind not in KIND_MASS_KDA and kind != "assembly":
        raise ValueError(f"unknown procedural kind {kind!r}; kinds: random, {', '.join(KINDS)}")
    if mass_kDa is None:
        lo, hi = KIND_MASS_KDA.get(kind, (150.0, 1500.0))
        mass_kDa = float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if not mass_kDa > 0:
        raise ValueError(f"mass_kDa must be positive, got {mass_kDa}")
    name = f"procedural-{kind}"
    source = f"procedural {kind} {mass_kDa:.0f} kDa"

    symmetric = {"cyclic": "C", "dihedral": "D", "tetrahedral": "T", "octahedral": "O", "icosahedral": "I",
                 "ring": "C", "assembly": None}
    if kind in symmetric:
        if symmetry is None:
            if kind == "cyclic":
                symmetry = f"C{int(rng.integers(2, 10))}"
            elif kind == "ring":
                symmetry = f"C{int(rng.integers(7, 17))}"
            elif kind == "dihedral":
                symmetry = f"D{int(rng.integers(2, 8))}"
            else:
                symmetry = symmetric[kind]
        parse_symmetry(symmetry)
        n_sub = len(symmetry_operators(symmetry))
        sub_mass = mass_kDa / n_sub
        if kind == "ring":
            ratios = (1.0, rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.7))
            sub = protein(sub_mass, rng, "compact", ratios)
        else:
            sub = protein(sub_mass, rng, str(rng.choice(["compact", "compact", "linear"])))
        sub_structure = sub.to_structure(name + "-subunit", source)
        out = symmetric_assembly(sub_structure, symmetry, rng, clearance_A=3.0, name=name)
        return Structure(name, out.xyz_A, out.atom_type, out.types, out.b_factor_A2,
                         f"{source} {symmetry.upper()}", symmetry.upper())
    if symmetry not in (None, "C1", "c1"):
        raise ValueError(f"kind {kind!r} is asymmetric; give symmetry only with a symmetric kind or 'random'")

    if kind == "globular":
        atoms = protein(mass_kDa, rng, "compact")
    elif kind == "elongated":
        if rng.random() < 0.5 or mass_kDa < 80:
            atoms = domain(mass_kDa, rng, (1.0, rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.4)))
            if mass_kDa > 150:
                atoms = pack([domain(m, rng, (1.0, 0.5, 0.4)) for m in split_mass(mass_kDa, rng)], rng,
                              "linear")
        else:
            atoms = pack([domain(m, rng) for m in split_mass(mass_kDa, rng, 20.0, 70.0)], rng, "linear")
    elif kind == "flat":
        atoms = pack([domain(m, rng, (1.0, rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.5)))
                       for m in split_mass(mass_kDa, rng, 20.0, 80.0)], rng, "planar")
    elif kind == "multidomain":
        parts = []
        for m in split_mass(mass_kDa, rng, 60.0, 300.0):
            parts.append(protein(m, rng, str(rng.choice(["compact", "linear", "planar"]))))
        atoms = pack(parts, rng, "compact")
    elif kind == "membrane":
        atoms = membrane(mass_kDa, rng)
    else:  # ribosome
        atoms = ribosome(mass_kDa, rng)
    return atoms.to_structure(name, source)
