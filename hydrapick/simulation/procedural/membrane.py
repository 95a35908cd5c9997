"""Membrane proteins: a helical transmembrane bundle, soluble domains, a detergent micelle or nanodisc."""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from .. import scattering as sc
from .atoms import Atoms, coarse_points, perpendicular, unit
from .protein import RESIDUE_MASS_DA, protein, residue_atoms


def membrane(mass_kDa: float, rng: np.random.Generator) -> Atoms:
    """Helical transmembrane bundle, optional soluble domains, in a detergent micelle or nanodisc."""
    tm_fraction = rng.uniform(0.35, 0.9)
    n_helices = int(np.clip(round(tm_fraction * mass_kDa / 3.2), 4, 60))
    # Helix axes on a hexagonal lattice (10 Å) inside a disc, roughly along z.
    lattice = []
    k = int(math.ceil(math.sqrt(n_helices))) + 2
    for a in range(-k, k + 1):
        for b in range(-k, k + 1):
            lattice.append((10.0 * (a + 0.5 * b), 10.0 * b * math.sqrt(3) / 2))
    lattice = np.array(lattice)
    stretch = np.array([1.0, rng.uniform(0.5, 1.0)])
    order = np.argsort(np.linalg.norm(lattice / stretch, axis=1))
    sites = lattice[order[:n_helices]] + rng.normal(0, 1.0, (n_helices, 2))
    ca, tan, side = [], [], []
    for x, y in sites:
        axis = unit(np.array([rng.normal(0, 0.25), rng.normal(0, 0.25), 1.0]))
        n_res = int(rng.integers(20, 27))
        j = np.arange(n_res)
        centre = np.array([x, y, rng.normal(0, 1.5)])
        pts = centre + ((j - (n_res - 1) / 2) * 1.5)[:, None] * axis
        u = perpendicular(axis[None], rng)[0]
        v = np.cross(axis, u)
        phi = rng.uniform(0, 2 * math.pi) + np.deg2rad(100.0) * j
        radial = np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v
        ca.append(pts + 2.3 * radial)
        tan.append(np.broadcast_to(axis, (n_res, 3)))
        side.append(radial)
    tm = residue_atoms(np.concatenate(ca), unit(np.concatenate(tan)), np.concatenate(side), rng)
    tm_pts = tm.points()
    out = Atoms()
    out.extend(tm)
    soluble_mass = max(0.0, mass_kDa - n_helices * 23 * RESIDUE_MASS_DA / 1000.0)
    if soluble_mass > 15.0:
        sol = protein(soluble_mass, rng)
        sp = sol.points()
        # Hang the soluble part below the membrane, touching the bundle.
        sol = sol.transformed(None, -sp.mean(0))
        sp = sp - sp.mean(0)
        tree = cKDTree(coarse_points(tm_pts, rng, 2000))
        coarse = coarse_points(sp, rng)
        dz = -(np.abs(tm_pts[:, 2]).max() + np.abs(sp[:, 2]).max() + 10.0)
        shift_xy = rng.normal(0, 5.0, 2)
        while dz < 0:
            d, _ = tree.query(coarse + np.array([*shift_xy, dz]), k=1, distance_upper_bound=3.5)
            if np.isfinite(d).any():
                break
            dz += 2.0
        out.extend(sol.transformed(None, np.array([*shift_xy, dz - 2.0])))
    # Detergent micelle (oblate, ~15-25 Å beyond the bundle) or a flatter nanodisc of lipid.
    radius_xy = np.linalg.norm(tm_pts[:, :2] - tm_pts[:, :2].mean(0), axis=1).max()
    nanodisc = rng.random() < 0.3
    belt = rng.uniform(15.0, 25.0)
    half_h = rng.uniform(17.0, 21.0) if not nanodisc else 21.0
    ax = np.array([radius_xy + belt, (radius_xy + belt) * rng.uniform(0.85, 1.0), half_h])
    if nanodisc:
        ax[:2] = radius_xy + rng.uniform(25.0, 45.0)
    volume = 4.0 / 3.0 * math.pi * ax.prod()
    per_A3 = sc.LIPID_DENSITY_G_CM3 / (14.03 * sc.A3_PER_DA_AT_UNIT_DENSITY)  # CH2 groups
    n_lipid = int(volume * per_A3 * 1.3)
    pts = rng.uniform(-1, 1, (n_lipid, 3))
    pts = pts[(pts**2).sum(1) < 1.0] * ax + np.array([*tm_pts[:, :2].mean(0), 0.0])
    if nanodisc:
        pts = pts[np.abs(pts[:, 2]) < 21.0]
    d, _ = cKDTree(tm_pts).query(pts, k=1, distance_upper_bound=4.0)
    pts = pts[~np.isfinite(d)]
    surface = ((pts - np.array([*tm_pts[:, :2].mean(0), 0.0])) / ax) ** 2
    head = surface.sum(1) > 0.8 ** 2
    el = np.where(head & (rng.random(len(pts)) < 0.35), "O", "C")
    hyd = np.where(el == "C", 2.0, 0.0)
    out.add(pts, el, hyd, sc.LIPID_DENSITY_G_CM3)
    if nanodisc:
        # Two scaffold-protein belts (helical) wrapped around the disc.
        r_belt = ax[0] + 5.0
        n_res = int(2 * math.pi * r_belt / 1.5)
        phi = np.linspace(0, 2 * math.pi, n_res, endpoint=False)
        for zb in (-6.0, 6.0):
            axis_pts = np.stack([r_belt * np.cos(phi), r_belt * np.sin(phi), np.full(n_res, zb)], 1)
            axis_pts[:, :2] += tm_pts[:, :2].mean(0)
            tangent = np.stack([-np.sin(phi), np.cos(phi), np.zeros(n_res)], 1)
            radial = np.stack([np.cos(phi), np.sin(phi), np.zeros(n_res)], 1)
            turn = np.deg2rad(100.0) * np.arange(n_res)
            rad = np.cos(turn)[:, None] * radial + np.sin(turn)[:, None] * np.array([0, 0, 1.0])
            out.extend(residue_atoms(axis_pts + 2.3 * rad, tangent, rad, rng))
    return out
