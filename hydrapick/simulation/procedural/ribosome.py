"""RNA and ribonucleoprotein particles: A-form double helices, RNP subunits, ribosomes.

RNA is built as A-form double helices (2.8 Å rise, 32.7 degrees twist, phosphates at 8.9 Å radius),
packed in layers into a subunit's core with protein domains mostly at its surface; a ribosome is a
large and a small subunit the size and composition of real ones.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from .. import scattering as sc
from ..structures import rotate_points
from ..symmetry import random_rotation
from .atoms import Atoms, Envelope, axes_for_volume, coarse_points, perpendicular, unit
from .protein import RESIDUE_MASS_DA, RESIDUE_VOLUME_A3, domain

_NUCLEOTIDE_MASS_DA = 330.0

# A-form RNA nucleotide backbone and sugar atoms: (radius Å, azimuth offset deg, rise offset Å, element).
_NT_BACKBONE = (
    (8.9, 0, 0.0, "P"), (10.2, 5, 0.8, "O"), (9.9, -8, -0.8, "O"), (8.3, 10, 1.0, "O"),
    (8.6, 20, 1.6, "C"), (8.1, 30, 1.0, "C"), (7.0, 33, 1.8, "O"), (8.4, 36, -0.2, "C"),
    (9.0, 44, -1.0, "O"), (7.5, 43, 0.3, "C"), (8.2, 52, 1.0, "O"), (6.6, 42, 1.6, "C"),
)
# Base atoms by base type (purines A, G larger than pyrimidines C, U).
_BASES = ("CNCNCNCNCN", "CNCNCNCNCNO", "CNCNCOCN", "CNCNCOCO")


def _rna_helix(n_bp: int, centre: np.ndarray, axis: np.ndarray, rng: np.random.Generator) -> Atoms:
    """An A-form double helix of ``n_bp`` base pairs centred at ``centre`` along ``axis``."""
    axis = unit(np.asarray(axis, dtype=np.float64))
    u = perpendicular(axis[None], rng)[0]
    v = np.cross(axis, u)
    j = np.arange(n_bp)
    z0 = (j - (n_bp - 1) / 2.0) * 2.8
    phase0 = rng.uniform(0, 2 * math.pi)
    atoms = Atoms()
    xyz, els = [], []
    for _strand, (dphi, zsign) in enumerate(((0.0, 1.0), (math.radians(155.0), -1.0))):
        phi_j = phase0 + np.deg2rad(32.7) * j + dphi
        for r, dtheta, dz, el in _NT_BACKBONE:
            phi = phi_j + zsign * math.radians(dtheta)
            xyz.append(centre + (r * np.cos(phi))[:, None] * u + (r * np.sin(phi))[:, None] * v
                       + (z0 + zsign * dz)[:, None] * axis)
            els.append(np.full(n_bp, el))
        # Bases: from C1' (r 6.6) inwards to the helix axis, as a ladder of atoms in the base plane.
        base_type = rng.integers(0, 4, n_bp)
        phi_c1 = phi_j + zsign * math.radians(42.0)
        for k in range(11):
            present = np.array([k < len(_BASES[b]) for b in base_type])
            if not present.any():
                continue
            frac = (k + 1) / 11.0
            r = 6.6 * (1 - frac) + 0.8
            lateral = (1.1 if k % 2 else -1.1)
            phi = phi_c1 + lateral / max(r, 1.0)
            pos = centre + (r * np.cos(phi))[:, None] * u + (r * np.sin(phi))[:, None] * v \
                + (z0 + zsign * 1.6)[:, None] * axis
            xyz.append(pos[present])
            els.append(np.array([_BASES[b][k] for b in base_type[present]]))
    xyz_all = np.concatenate(xyz)
    el_all = np.concatenate(els)
    hyd = np.where(el_all == "C", 1.0, np.where(el_all == "N", 0.6, np.where(el_all == "O", 0.15, 0.0)))
    atoms.add(xyz_all, el_all, hyd, sc.NUCLEIC_ACID_DENSITY_G_CM3)
    return atoms


def _rnp_subunit(mass_kDa: float, rna_fraction: float, ratios, rng: np.random.Generator,
                 rotation=None) -> tuple[Atoms, Envelope]:
    """A ribonucleoprotein subunit: packed RNA helices with protein domains mostly at the surface."""
    # RNA (1.8 g/cm^3) and protein (1.35) together: ~1.55 g/cm^3, plus 15 % for solvent channels.
    volume = mass_kDa * 1000.0 * sc.A3_PER_DA_AT_UNIT_DENSITY / 1.55 * 0.95
    axes = axes_for_volume(volume, ratios)
    rot = random_rotation(rng) if rotation is None else rotation
    env = Envelope(axes, rot, rng, bumpiness=0.22)
    out = Atoms()
    rna_target = rna_fraction * mass_kDa * 1000.0 / _NUCLEOTIDE_MASS_DA / 2.0  # base pairs
    # RNA helices fill the core in layers 18 Å apart; within a layer, rods 18 Å apart in a random
    # direction, cut into helices of 6-24 bp with a random tilt. Random rod packing saturates far below
    # ribosomal density; layered rods reach it.
    e = rot[:, rng.permutation(3)]
    reach = float(axes.max()) * 1.1
    candidates = []
    for z in np.arange(-reach + rng.uniform(0, 18.0), reach, 18.0):
        ang = rng.uniform(0, math.pi)
        u = math.cos(ang) * e[:, 1] + math.sin(ang) * e[:, 2]
        w = np.cross(e[:, 0], u)
        for m in np.arange(-reach + rng.uniform(0, 18.0), reach, 18.0):
            t = -reach
            while t < reach:
                n_bp = int(rng.integers(6, 24))
                length = n_bp * 2.8
                d = unit(u + rng.normal(0, 0.25, 3))
                c = z * e[:, 0] + m * w + (t + length / 2) * u + rng.normal(0, 1.5, 3)
                line = c + ((np.arange(n_bp) - (n_bp - 1) / 2) * 2.8)[:, None] * d
                candidates.append((n_bp, c, d, line))
                t += length + rng.uniform(3.0, 8.0)
    # Keep the helices that lie wholly inside the envelope (one vectorised test for all of them).
    segments = []
    if candidates:
        inside = env.inside(np.concatenate([cand[3] for cand in candidates]), 0.95)
        starts = np.cumsum([0] + [cand[0] for cand in candidates[:-1]])
        whole = np.minimum.reduceat(inside.astype(np.int8), starts) > 0
        segments = [cand for cand, ok in zip(candidates, whole, strict=True) if ok]
    order = rng.permutation(len(segments))
    axis_list = []
    made = 0
    for i in order:
        n_bp, c, d, line = segments[i]
        if made + n_bp > rna_target * 1.02:
            continue
        out.extend(_rna_helix(n_bp, c, d, rng))
        axis_list.append(line)
        made += n_bp
    axis_pts = np.concatenate(axis_list) if axis_list else np.zeros((0, 3))
    rna_mass = made * 2 * _NUCLEOTIDE_MASS_DA / 1000.0
    protein_left = max(0.0, mass_kDa - rna_mass)
    centres = np.zeros((0, 3))
    radii = np.zeros(0)
    fails = 0
    pool = np.zeros((0, 3))
    while protein_left > 5.0 and fails < 1500:
        m = min(protein_left, rng.uniform(8.0, 35.0) * (0.5 if fails > 500 else 1.0))
        r = (m * 1000.0 * RESIDUE_VOLUME_A3 / RESIDUE_MASS_DA * 3 / (4 * math.pi)) ** (1 / 3)
        if not len(pool):
            # Candidate centres inside the envelope, drawn in batches (mostly in the outer shell).
            cand = unit(rng.standard_normal((256, 3))) * rng.uniform(0.3, 1.05, (256, 1)) ** 0.5
            cand = rotate_points(cand * axes, rot)
            pool = cand[env.scaled_radius(cand) < 1.0]
            fails += 256 - len(pool)
            continue
        c, pool = pool[0], pool[1:]
        ok = True
        if len(axis_pts):
            ok = np.sqrt(((axis_pts - c) ** 2).sum(1).min()) > 8.0 + 0.6 * r
        if ok and len(centres):
            ok = (np.sqrt(((centres - c) ** 2).sum(1)) > 0.8 * (radii + r)).all()
        if not ok:
            fails += 1
            continue
        dom = domain(m, rng)
        pts = dom.points()
        out.extend(dom.transformed(None, c - pts.mean(0)))
        centres = np.concatenate([centres, c[None]])
        radii = np.append(radii, r)
        protein_left -= m
    return out, env


def ribosome(mass_kDa: float, rng: np.random.Generator) -> Atoms:
    rna_fraction = rng.uniform(0.5, 0.65)
    # The small subunit sits on the large one's flattest face (the large subunit's shortest axis is the
    # interface normal), its own shortest axis along that normal and its long axis across the interface,
    # so the assembly is compact (principal extents within ~1.3x of each other) as ribosomes are.
    rot_l = random_rotation(rng)
    direction = rot_l[:, 2] * rng.choice([-1.0, 1.0])
    across = perpendicular(direction[None], rng)[0]
    rot_s = np.stack([across, np.cross(direction, across), direction], axis=1)
    large, env_l = _rnp_subunit(0.64 * mass_kDa, rna_fraction, (1.0, rng.uniform(0.85, 1.0), 0.8), rng,
                                rot_l)
    small, env_s = _rnp_subunit(0.36 * mass_kDa, rna_fraction, (1.0, 0.62, 0.5), rng, rot_s)
    pts_l, pts_s = large.points(), small.points()
    centre_l = pts_l.mean(0)
    tree = cKDTree(coarse_points(pts_l, rng, 3000))
    coarse_s = coarse_points(pts_s - pts_s.mean(0), rng, 1500)
    dist = np.linalg.norm(pts_l - centre_l, axis=1).max() + np.linalg.norm(coarse_s, axis=1).max()
    # Slide the small subunit in until a broad interface forms (a tenth of it within 8 Å of the large
    # one), then drop its atoms that would clash.
    while dist > 0:
        d, _ = tree.query(coarse_s + centre_l + dist * direction, k=1, distance_upper_bound=8.0)
        if np.isfinite(d).sum() > 0.1 * len(coarse_s):
            break
        dist -= 2.0
    small = small.transformed(None, centre_l + dist * direction - pts_s.mean(0))
    xyz, el, h, rho = small.arrays()
    d, _ = cKDTree(pts_l).query(xyz, k=1, distance_upper_bound=2.5)
    keep = ~np.isfinite(d)
    out = Atoms()
    out.extend(large)
    out.add(xyz[keep], el[keep], h[keep])
    out.rho[-1] = rho[keep]
    return out
