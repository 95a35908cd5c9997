"""Pseudo-atoms and the geometry every procedural builder shares.

`Atoms` accumulates atoms with their element, implicit hydrogens and the density of their material
(protein, nucleic acid, lipid); `Envelope` is the bumpy ellipsoid a domain or a subunit is filled in.
"""

from __future__ import annotations

import math

import numpy as np

from .. import scattering as sc
from ..structures import Structure, rotate_points


class Atoms:
    """Accumulates atoms with their material (protein, nucleic acid, lipid)."""

    def __init__(self) -> None:
        self.xyz: list[np.ndarray] = []
        self.el: list[np.ndarray] = []
        self.h: list[np.ndarray] = []
        self.rho: list[np.ndarray] = []

    def add(self, xyz, elements, hydrogens=None, density=sc.PROTEIN_DENSITY_G_CM3) -> None:
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        elements = np.asarray(elements).reshape(-1)
        if hydrogens is None:
            hydrogens = implicit_h(elements)
        self.xyz.append(xyz)
        self.el.append(elements)
        self.h.append(np.broadcast_to(np.asarray(hydrogens, dtype=np.float64), (len(xyz),)))
        self.rho.append(np.full(len(xyz), density))

    def extend(self, other: Atoms) -> None:
        self.xyz += other.xyz
        self.el += other.el
        self.h += other.h
        self.rho += other.rho

    def arrays(self):
        return (np.concatenate(self.xyz), np.concatenate(self.el), np.concatenate(self.h),
                np.concatenate(self.rho))

    def transformed(self, rotation=None, shift=(0.0, 0.0, 0.0)) -> Atoms:
        out = Atoms()
        for xyz, el, h, rho in zip(self.xyz, self.el, self.h, self.rho, strict=True):
            p = rotate_points(xyz, rotation) if rotation is not None else xyz
            out.xyz.append(p + np.asarray(shift))
            out.el.append(el)
            out.h.append(h)
            out.rho.append(rho)
        return out

    def points(self) -> np.ndarray:
        return np.concatenate(self.xyz) if self.xyz else np.zeros((0, 3))

    def to_structure(self, name: str, source: str, symmetry: str = "C1") -> Structure:
        xyz, el, h, rho = self.arrays()
        return Structure.from_atoms(name, xyz, el, h, rho, b_factor_A2=20.0, source=source, symmetry=symmetry)


_IMPLICIT_BY_CODE = np.array([sc.IMPLICIT_HYDROGENS.get(e, 0.0) for e in ("C", "N", "O", "S", "P")])


def _element_codes(elements: np.ndarray) -> np.ndarray:
    codes = np.zeros(len(elements), dtype=np.int64)
    for i, e in enumerate(("C", "N", "O", "S", "P")):
        codes[elements == e] = i
    return codes


def implicit_h(elements: np.ndarray) -> np.ndarray:
    return _IMPLICIT_BY_CODE[_element_codes(elements)]


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def perpendicular(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors perpendicular to each row of ``t``."""
    r = rng.standard_normal(t.shape)
    return unit(r - (r * t).sum(-1, keepdims=True) * t)


def coarse_points(points: np.ndarray, rng: np.random.Generator, n: int = 600) -> np.ndarray:
    return points if len(points) <= n else points[rng.choice(len(points), n, replace=False)]


# --- envelopes ----------------------------------------------------------------------------------------
class Envelope:
    """A bumpy ellipsoid: ``|x / axes| < 1 + bumps(direction)``."""

    def __init__(self, axes_A, rotation, rng: np.random.Generator, bumpiness: float = 0.12) -> None:
        self.axes = np.asarray(axes_A, dtype=np.float64)
        self.rotation = rotation  # columns: the ellipsoid's axes
        n = int(rng.integers(4, 10))
        self.bump_dirs = unit(rng.standard_normal((n, 3)))
        self.bump_amp = rng.uniform(-bumpiness, bumpiness, n)
        self.bump_width = rng.uniform(0.35, 0.8, n)

    def scaled_radius(self, pts: np.ndarray) -> np.ndarray:
        """<1 inside. ``pts`` in the structure frame (Å)."""
        local = rotate_points(pts, self.rotation.T)
        s = local / self.axes
        r = np.linalg.norm(s, axis=-1)
        u = s / np.maximum(r, 1e-9)[..., None]
        cos = rotate_points(u.reshape(-1, 3), self.bump_dirs).reshape(u.shape[:-1] + (len(self.bump_dirs),))
        bump = 1.0 + (self.bump_amp * np.exp((cos - 1.0) / self.bump_width**2)).sum(-1)
        return r / bump

    def inside(self, pts: np.ndarray, margin: float = 1.0) -> np.ndarray:
        return self.scaled_radius(pts) < margin


def axes_for_volume(volume_A3: float, ratios) -> np.ndarray:
    ratios = np.asarray(ratios, dtype=np.float64)
    a = (3.0 * volume_A3 / (4.0 * math.pi * ratios.prod())) ** (1.0 / 3.0)
    return a * ratios
