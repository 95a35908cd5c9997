"""Protein domains built as real folds are: layers of helices or sheets, backbone and side-chain atoms.

A domain fills a bumpy ellipsoid with layers 10 Å apart, each a row of alpha-helices or a pleated
beta-sheet, plus surface loops; `pack` places domains into compact, linear or planar particles.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from ..structures import rotate_points
from ..symmetry import random_rotation
from .atoms import Atoms, Envelope, axes_for_volume, coarse_points, implicit_h, perpendicular, unit

RESIDUE_VOLUME_A3 = 150.0  # per residue in the layer model (real proteins ~135 plus packing defects)
RESIDUE_MASS_DA = 110.0

# Side chains (atoms beyond CB included, CB first) and natural frequencies (%) of the 20 amino acids.
_SIDE_CHAINS = {
    "G": ("", 7.07), "A": ("C", 8.25), "S": ("CO", 6.56), "C": ("CS", 1.37), "V": ("CCC", 6.87),
    "T": ("COC", 5.34), "P": ("CCC", 4.70), "I": ("CCCC", 5.96), "L": ("CCCC", 9.66), "D": ("CCOO", 5.45),
    "N": ("CCON", 4.06), "E": ("CCCOO", 6.75), "Q": ("CCCON", 3.93), "K": ("CCCCN", 5.84),
    "M": ("CCSC", 2.42), "H": ("CCNCCN", 2.27), "F": ("CCCCCCC", 3.86), "R": ("CCCNCNN", 5.53),
    "Y": ("CCCCCCCO", 2.92), "W": ("CCCCNCCCCC", 1.08),
}
_MAX_SIDE = 10
_SIDE_TABLE = np.array([list(s.ljust(_MAX_SIDE, "-")) for s, _ in _SIDE_CHAINS.values()])
_SIDE_LEN = np.array([len(s) for s, _ in _SIDE_CHAINS.values()])
_AA_P = np.array([f for _, f in _SIDE_CHAINS.values()])
_AA_P = _AA_P / _AA_P.sum()


def _domain_residues(n_res: int, ratios, rng: np.random.Generator, helix_fraction: float | None = None):
    """Residue anchors of one domain: CA positions, chain tangents, side-chain directions."""
    axes = axes_for_volume(n_res * RESIDUE_VOLUME_A3, ratios)
    rot = random_rotation(rng)
    env = Envelope(axes, rot, rng)
    if helix_fraction is None:
        helix_fraction = float(rng.choice([0.9, 0.6, 0.4, 0.15], p=[0.35, 0.3, 0.2, 0.15]))
    # Layers stack along one ellipsoid axis; rods run in the plane of the other two.
    order = rng.permutation(3)
    e1 = rot[:, order[0]]
    e2 = rot[:, order[1]]
    e3 = rot[:, order[2]]
    extent = axes[order[0]] * 1.15
    reach = float(axes.max()) * 1.2
    theta0 = rng.uniform(0, math.pi)
    twist = rng.choice([-1, 1]) * rng.uniform(0.25, 0.7)
    ca, tan, side = [], [], []
    z = -extent + rng.uniform(0, 10.0)
    layer = 0
    while z < extent:
        helix = rng.random() < helix_fraction
        theta = theta0 + layer * twist
        u = math.cos(theta) * e2 + math.sin(theta) * e3
        w = np.cross(e1, u)
        spacing = 10.0 if helix else 4.8
        rise = 1.5 if helix else 3.3
        offset = rng.uniform(0, spacing)
        for m in np.arange(-reach + offset, reach, spacing):
            base = z * e1 + m * w + rng.normal(0, 0.6, 3)
            t = np.arange(-reach, reach, rise)
            pts = base + t[:, None] * u
            keep = env.inside(pts)
            if keep.sum() < (5 if helix else 3):
                continue
            idx = np.flatnonzero(keep)
            # Split long runs into elements joined by short loops (a missing residue or two).
            max_len = int(rng.integers(12, 28)) if helix else int(rng.integers(5, 10))
            runs = np.split(idx, np.flatnonzero(np.diff(idx) > 1) + 1)
            for run in runs:
                for start in range(0, len(run), max_len + 2):
                    seg = run[start:start + max_len]
                    if len(seg) < (4 if helix else 3):
                        continue
                    j = np.arange(len(seg))
                    direction = u if (m // spacing) % 2 == 0 else -u
                    axis_pts = pts[seg]
                    if helix:
                        phi = rng.uniform(0, 2 * math.pi) + np.deg2rad(100.0) * j
                        radial = np.cos(phi)[:, None] * w + np.sin(phi)[:, None] * e1
                        ca.append(axis_pts + 2.3 * radial)
                        side.append(radial)
                    else:
                        sign = np.where(j % 2 == 0, 1.0, -1.0)[:, None]
                        ca.append(axis_pts + 0.9 * sign * e1)
                        side.append(sign * e1 + 0 * w)
                    tan.append(np.broadcast_to(direction, (len(seg), 3)))
        z += 10.0
        layer += 1
    ca = np.concatenate(ca) if ca else np.zeros((0, 3))
    tan = np.concatenate(tan) if tan else np.zeros((0, 3))
    side = np.concatenate(side) if side else np.zeros((0, 3))
    # Surface loops: residues scattered just inside the envelope make the surface rough.
    n_loop = max(2, int(0.12 * max(n_res, len(ca))))
    cand = rng.standard_normal((n_loop * 6, 3))
    cand = unit(cand) * rng.uniform(0.7, 1.05, (len(cand), 1))
    cand = rotate_points(cand * axes, rot)
    sr = env.scaled_radius(cand)
    cand = cand[(sr > 0.75) & (sr < 1.08)][:n_loop]
    if len(cand):
        ca = np.concatenate([ca, cand])
        tan = np.concatenate([tan, unit(rng.standard_normal(cand.shape))])
        side = np.concatenate([side, unit(cand)])
    return ca, unit(tan), unit(side), env


def residue_atoms(ca: np.ndarray, tan: np.ndarray, side: np.ndarray, rng: np.random.Generator) -> Atoms:
    """Backbone and side-chain atoms for residue anchors (vectorised)."""
    n = len(ca)
    out = Atoms()
    if n == 0:
        return out
    perp = perpendicular(tan, rng)
    n_at = ca - 1.0 * tan + 0.9 * perp
    c_at = ca + 1.0 * tan + 0.9 * perp
    o_at = c_at + 1.23 * unit(0.4 * tan + perp)
    out.add(np.concatenate([n_at, ca, c_at, o_at]),
            np.concatenate([np.full(n, "N"), np.full(n, "C"), np.full(n, "C"), np.full(n, "O")]),
            np.concatenate([np.full(n, 0.9), np.full(n, 1.0), np.zeros(n), np.zeros(n)]))
    aa = rng.choice(len(_AA_P), size=n, p=_AA_P)
    length = _SIDE_LEN[aa]
    pos = np.empty((n, _MAX_SIDE, 3))
    step = unit(side + 0.35 * rng.standard_normal((n, 3)))
    p = ca + 1.53 * step
    for k in range(_MAX_SIDE):
        pos[:, k] = p
        step = unit(step + 0.5 * side + 0.8 * rng.standard_normal((n, 3)))
        p = p + 1.5 * step
    mask = np.arange(_MAX_SIDE)[None, :] < length[:, None]
    elements = _SIDE_TABLE[aa][mask]
    out.add(pos[mask], elements, implicit_h(elements))
    return out


def domain(mass_kDa: float, rng: np.random.Generator, ratios=None, helix_fraction=None) -> Atoms:
    n_res = max(30, int(round(mass_kDa * 1000.0 / RESIDUE_MASS_DA)))
    if ratios is None:
        ratios = (1.0, rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.9))
    ca, tan, side, _ = _domain_residues(n_res, ratios, rng, helix_fraction)
    return residue_atoms(ca, tan, side, rng)


def pack(domains: list[Atoms], rng: np.random.Generator, mode: str = "compact", contact_A: float = 3.5,
          normal=None) -> Atoms:
    """Place domains next to each other: compact cluster, a chain (linear) or a sheet (planar)."""
    placed = Atoms()
    coarse_all = np.zeros((0, 3))
    previous_centre = np.zeros(3)
    direction = unit(rng.standard_normal(3))
    normal = unit(rng.standard_normal(3)) if normal is None else unit(np.asarray(normal, dtype=np.float64))
    for i, dom in enumerate(domains):
        pts = dom.points()
        centre = pts.mean(0)
        dom = dom.transformed(None, -centre)
        pts = pts - centre
        coarse = coarse_points(pts, rng)
        if i == 0:
            placed.extend(dom)
            coarse_all = coarse
            continue
        tree = cKDTree(coarse_all)
        if mode == "linear":
            direction = unit(direction + 0.45 * rng.standard_normal(3))
            origin = previous_centre
        else:
            direction = unit(rng.standard_normal(3))
            if mode == "planar":
                direction = unit(direction - (direction @ normal) * normal)
            origin = coarse_all.mean(0)
        far = np.linalg.norm(coarse_all - origin, axis=1).max() + np.linalg.norm(coarse, axis=1).max() + 5
        dist = far
        while dist > 0:
            d, _ = tree.query(coarse + origin + dist * direction, k=1, distance_upper_bound=contact_A)
            if np.isfinite(d).any():
                break
            dist -= 2.0
        dist += 2.0
        shift = origin + dist * direction
        placed.extend(dom.transformed(None, shift))
        coarse_all = np.concatenate([coarse_all, coarse + shift])
        previous_centre = shift
    return placed


def split_mass(total_kDa: float, rng: np.random.Generator, lo: float = 25.0,
                hi: float = 120.0) -> list[float]:
    """Split a mass into domain masses of roughly ``lo``-``hi`` kDa."""
    if total_kDa <= hi:
        return [total_kDa]
    k = int(np.clip(round(total_kDa / rng.uniform(lo * 1.5, hi)), 2, 400))
    parts = rng.dirichlet(np.full(k, 3.0)) * total_kDa
    return list(np.maximum(parts, 8.0))


def protein(mass_kDa: float, rng: np.random.Generator, mode: str = "compact", ratios=None) -> Atoms:
    masses = split_mass(mass_kDa, rng)
    domains = [domain(m, rng, ratios) for m in masses]
    return domains[0] if len(domains) == 1 else pack(domains, rng, mode)
