"""Procedural pseudo-atomic particles, so the simulator needs no structure files.

Particles are built the way proteins are organised, so that their projections have protein-like
texture at every pixel size, not just the right outline:

* a *domain* is a bumpy ellipsoid filled with layers 10 Å apart; each layer is a row of alpha-helices
  (rods 10 Å apart, 1.5 Å rise, 100 degrees per residue) or a beta-sheet (strands 4.8 Å apart, 3.3 Å
  rise, pleated), successive layers twisted as in real folds, plus surface loops;
* every residue gets its backbone atoms (N, CA, C, O) and a side chain whose length and elements follow
  the natural amino-acid frequencies;
* RNA is built as A-form double helices (2.8 Å rise, 32.7 degrees twist, phosphates at 8.9 Å radius);
* domains are packed into compact, elongated, flat or irregular particles, point-group assemblies
  (Cn, Dn, T, O, I), rings, membrane proteins in a detergent micelle, and two-subunit ribonucleoprotein
  particles the size and composition of ribosomes.

Masses span ~50 kDa to several MDa. Everything is drawn from the generator passed in, so a seed fixes
the particle.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.spatial import cKDTree

from . import scattering as sc
from .structures import Structure, rotate_points
from .symmetry import random_rotation, symmetric_assembly

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

_RESIDUE_VOLUME_A3 = 150.0  # per residue in the layer model (real proteins ~135 plus packing defects)
_RESIDUE_MASS_DA = 110.0
_NUCLEOTIDE_MASS_DA = 330.0

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

# A-form RNA nucleotide backbone and sugar atoms: (radius Å, azimuth offset deg, rise offset Å, element).
_NT_BACKBONE = (
    (8.9, 0, 0.0, "P"), (10.2, 5, 0.8, "O"), (9.9, -8, -0.8, "O"), (8.3, 10, 1.0, "O"),
    (8.6, 20, 1.6, "C"), (8.1, 30, 1.0, "C"), (7.0, 33, 1.8, "O"), (8.4, 36, -0.2, "C"),
    (9.0, 44, -1.0, "O"), (7.5, 43, 0.3, "C"), (8.2, 52, 1.0, "O"), (6.6, 42, 1.6, "C"),
)
# Base atoms by base type (purines A, G larger than pyrimidines C, U).
_BASES = ("CNCNCNCNCN", "CNCNCNCNCNO", "CNCNCOCN", "CNCNCOCO")


class _Atoms:
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
            hydrogens = _implicit_h(elements)
        self.xyz.append(xyz)
        self.el.append(elements)
        self.h.append(np.broadcast_to(np.asarray(hydrogens, dtype=np.float64), (len(xyz),)))
        self.rho.append(np.full(len(xyz), density))

    def extend(self, other: _Atoms) -> None:
        self.xyz += other.xyz
        self.el += other.el
        self.h += other.h
        self.rho += other.rho

    def arrays(self):
        return (np.concatenate(self.xyz), np.concatenate(self.el), np.concatenate(self.h),
                np.concatenate(self.rho))

    def transformed(self, rotation=None, shift=(0.0, 0.0, 0.0)) -> _Atoms:
        out = _Atoms()
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


def _implicit_h(elements: np.ndarray) -> np.ndarray:
    return _IMPLICIT_BY_CODE[_element_codes(elements)]


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=-1, keepdims=True), 1e-9)


def _perpendicular(t: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random unit vectors perpendicular to each row of ``t``."""
    r = rng.standard_normal(t.shape)
    return _unit(r - (r * t).sum(-1, keepdims=True) * t)


# --- envelopes ----------------------------------------------------------------------------------------
class _Envelope:
    """A bumpy ellipsoid: ``|x / axes| < 1 + bumps(direction)``."""

    def __init__(self, axes_A, rotation, rng: np.random.Generator, bumpiness: float = 0.12) -> None:
        self.axes = np.asarray(axes_A, dtype=np.float64)
        self.rotation = rotation  # columns: the ellipsoid's axes
        n = int(rng.integers(4, 10))
        self.bump_dirs = _unit(rng.standard_normal((n, 3)))
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


def _axes_for_volume(volume_A3: float, ratios) -> np.ndarray:
    ratios = np.asarray(ratios, dtype=np.float64)
    a = (3.0 * volume_A3 / (4.0 * math.pi * ratios.prod())) ** (1.0 / 3.0)
    return a * ratios


# --- protein ------------------------------------------------------------------------------------------
def _domain_residues(n_res: int, ratios, rng: np.random.Generator, helix_fraction: float | None = None):
    """Residue anchors of one domain: CA positions, chain tangents, side-chain directions."""
    axes = _axes_for_volume(n_res * _RESIDUE_VOLUME_A3, ratios)
    rot = random_rotation(rng)
    env = _Envelope(axes, rot, rng)
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
    cand = _unit(cand) * rng.uniform(0.7, 1.05, (len(cand), 1))
    cand = rotate_points(cand * axes, rot)
    sr = env.scaled_radius(cand)
    cand = cand[(sr > 0.75) & (sr < 1.08)][:n_loop]
    if len(cand):
        ca = np.concatenate([ca, cand])
        tan = np.concatenate([tan, _unit(rng.standard_normal(cand.shape))])
        side = np.concatenate([side, _unit(cand)])
    return ca, _unit(tan), _unit(side), env


def _residue_atoms(ca: np.ndarray, tan: np.ndarray, side: np.ndarray, rng: np.random.Generator) -> _Atoms:
    """Backbone and side-chain atoms for residue anchors (vectorised)."""
    n = len(ca)
    out = _Atoms()
    if n == 0:
        return out
    perp = _perpendicular(tan, rng)
    n_at = ca - 1.0 * tan + 0.9 * perp
    c_at = ca + 1.0 * tan + 0.9 * perp
    o_at = c_at + 1.23 * _unit(0.4 * tan + perp)
    out.add(np.concatenate([n_at, ca, c_at, o_at]),
            np.concatenate([np.full(n, "N"), np.full(n, "C"), np.full(n, "C"), np.full(n, "O")]),
            np.concatenate([np.full(n, 0.9), np.full(n, 1.0), np.zeros(n), np.zeros(n)]))
    aa = rng.choice(len(_AA_P), size=n, p=_AA_P)
    length = _SIDE_LEN[aa]
    pos = np.empty((n, _MAX_SIDE, 3))
    step = _unit(side + 0.35 * rng.standard_normal((n, 3)))
    p = ca + 1.53 * step
    for k in range(_MAX_SIDE):
        pos[:, k] = p
        step = _unit(step + 0.5 * side + 0.8 * rng.standard_normal((n, 3)))
        p = p + 1.5 * step
    mask = np.arange(_MAX_SIDE)[None, :] < length[:, None]
    elements = _SIDE_TABLE[aa][mask]
    out.add(pos[mask], elements, _implicit_h(elements))
    return out


def _domain(mass_kDa: float, rng: np.random.Generator, ratios=None, helix_fraction=None) -> _Atoms:
    n_res = max(30, int(round(mass_kDa * 1000.0 / _RESIDUE_MASS_DA)))
    if ratios is None:
        ratios = (1.0, rng.uniform(0.7, 1.0), rng.uniform(0.55, 0.9))
    ca, tan, side, _ = _domain_residues(n_res, ratios, rng, helix_fraction)
    return _residue_atoms(ca, tan, side, rng)


def _coarse(points: np.ndarray, rng: np.random.Generator, n: int = 600) -> np.ndarray:
    return points if len(points) <= n else points[rng.choice(len(points), n, replace=False)]


def _pack(domains: list[_Atoms], rng: np.random.Generator, mode: str = "compact", contact_A: float = 3.5,
          normal=None) -> _Atoms:
    """Place domains next to each other: compact cluster, a chain (linear) or a sheet (planar)."""
    placed = _Atoms()
    coarse_all = np.zeros((0, 3))
    previous_centre = np.zeros(3)
    direction = _unit(rng.standard_normal(3))
    normal = _unit(rng.standard_normal(3)) if normal is None else _unit(np.asarray(normal, dtype=np.float64))
    for i, dom in enumerate(domains):
        pts = dom.points()
        centre = pts.mean(0)
        dom = dom.transformed(None, -centre)
        pts = pts - centre
        coarse = _coarse(pts, rng)
        if i == 0:
            placed.extend(dom)
            coarse_all = coarse
            continue
        tree = cKDTree(coarse_all)
        if mode == "linear":
            direction = _unit(direction + 0.45 * rng.standard_normal(3))
            origin = previous_centre
        else:
            direction = _unit(rng.standard_normal(3))
            if mode == "planar":
                direction = _unit(direction - (direction @ normal) * normal)
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


def _split_mass(total_kDa: float, rng: np.random.Generator, lo: float = 25.0,
                hi: float = 120.0) -> list[float]:
    """Split a mass into domain masses of roughly ``lo``-``hi`` kDa."""
    if total_kDa <= hi:
        return [total_kDa]
    k = int(np.clip(round(total_kDa / rng.uniform(lo * 1.5, hi)), 2, 400))
    parts = rng.dirichlet(np.full(k, 3.0)) * total_kDa
    return list(np.maximum(parts, 8.0))


def _protein(mass_kDa: float, rng: np.random.Generator, mode: str = "compact", ratios=None) -> _Atoms:
    masses = _split_mass(mass_kDa, rng)
    domains = [_domain(m, rng, ratios) for m in masses]
    return domains[0] if len(domains) == 1 else _pack(domains, rng, mode)


# --- RNA ----------------------------------------------------------------------------------------------
def _rna_helix(n_bp: int, centre: np.ndarray, axis: np.ndarray, rng: np.random.Generator) -> _Atoms:
    """An A-form double helix of ``n_bp`` base pairs centred at ``centre`` along ``axis``."""
    axis = _unit(np.asarray(axis, dtype=np.float64))
    u = _perpendicular(axis[None], rng)[0]
    v = np.cross(axis, u)
    j = np.arange(n_bp)
    z0 = (j - (n_bp - 1) / 2.0) * 2.8
    phase0 = rng.uniform(0, 2 * math.pi)
    atoms = _Atoms()
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
                 rotation=None) -> tuple[_Atoms, _Envelope]:
    """A ribonucleoprotein subunit: packed RNA helices with protein domains mostly at the surface."""
    # RNA (1.8 g/cm^3) and protein (1.35) together: ~1.55 g/cm^3, plus 15 % for solvent channels.
    volume = mass_kDa * 1000.0 * sc.A3_PER_DA_AT_UNIT_DENSITY / 1.55 * 0.95
    axes = _axes_for_volume(volume, ratios)
    rot = random_rotation(rng) if rotation is None else rotation
    env = _Envelope(axes, rot, rng, bumpiness=0.22)
    out = _Atoms()
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
                d = _unit(u + rng.normal(0, 0.25, 3))
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
        r = (m * 1000.0 * _RESIDUE_VOLUME_A3 / _RESIDUE_MASS_DA * 3 / (4 * math.pi)) ** (1 / 3)
        if not len(pool):
            # Candidate centres inside the envelope, drawn in batches (mostly in the outer shell).
            cand = _unit(rng.standard_normal((256, 3))) * rng.uniform(0.3, 1.05, (256, 1)) ** 0.5
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
        dom = _domain(m, rng)
        pts = dom.points()
        out.extend(dom.transformed(None, c - pts.mean(0)))
        centres = np.concatenate([centres, c[None]])
        radii = np.append(radii, r)
        protein_left -= m
    return out, env


def _ribosome(mass_kDa: float, rng: np.random.Generator) -> _Atoms:
    rna_fraction = rng.uniform(0.5, 0.65)
    # The small subunit sits on the large one's flattest face (the large subunit's shortest axis is the
    # interface normal), its own shortest axis along that normal and its long axis across the interface,
    # so the assembly is compact (principal extents within ~1.3x of each other) as ribosomes are.
    rot_l = random_rotation(rng)
    direction = rot_l[:, 2] * rng.choice([-1.0, 1.0])
    across = _perpendicular(direction[None], rng)[0]
    rot_s = np.stack([across, np.cross(direction, across), direction], axis=1)
    large, env_l = _rnp_subunit(0.64 * mass_kDa, rna_fraction, (1.0, rng.uniform(0.85, 1.0), 0.8), rng,
                                rot_l)
    small, env_s = _rnp_subunit(0.36 * mass_kDa, rna_fraction, (1.0, 0.62, 0.5), rng, rot_s)
    pts_l, pts_s = large.points(), small.points()
    centre_l = pts_l.mean(0)
    tree = cKDTree(_coarse(pts_l, rng, 3000))
    coarse_s = _coarse(pts_s - pts_s.mean(0), rng, 1500)
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
    out = _Atoms()
    out.extend(large)
    out.add(xyz[keep], el[keep], h[keep])
    out.rho[-1] = rho[keep]
    return out


# --- membrane proteins --------------------------------------------------------------------------------
def _membrane(mass_kDa: float, rng: np.random.Generator) -> _Atoms:
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
        axis = _unit(np.array([rng.normal(0, 0.25), rng.normal(0, 0.25), 1.0]))
        n_res = int(rng.integers(20, 27))
        j = np.arange(n_res)
        centre = np.array([x, y, rng.normal(0, 1.5)])
        pts = centre + ((j - (n_res - 1) / 2) * 1.5)[:, None] * axis
        u = _perpendicular(axis[None], rng)[0]
        v = np.cross(axis, u)
        phi = rng.uniform(0, 2 * math.pi) + np.deg2rad(100.0) * j
        radial = np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v
        ca.append(pts + 2.3 * radial)
        tan.append(np.broadcast_to(axis, (n_res, 3)))
        side.append(radial)
    tm = _residue_atoms(np.concatenate(ca), _unit(np.concatenate(tan)), np.concatenate(side), rng)
    tm_pts = tm.points()
    out = _Atoms()
    out.extend(tm)
    soluble_mass = max(0.0, mass_kDa - n_helices * 23 * _RESIDUE_MASS_DA / 1000.0)
    if soluble_mass > 15.0:
        sol = _protein(soluble_mass, rng)
        sp = sol.points()
        # Hang the soluble part below the membrane, touching the bundle.
        sol = sol.transformed(None, -sp.mean(0))
        sp = sp - sp.mean(0)
        tree = cKDTree(_coarse(tm_pts, rng, 2000))
        coarse = _coarse(sp, rng)
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
            out.extend(_residue_atoms(axis_pts + 2.3 * rad, tangent, rad, rng))
    return out


# --- public -------------------------------------------------------------------------------------------
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
        from .symmetry import parse_symmetry, symmetry_operators

        parse_symmetry(symmetry)
        n_sub = len(symmetry_operators(symmetry))
        sub_mass = mass_kDa / n_sub
        if kind == "ring":
            ratios = (1.0, rng.uniform(0.5, 0.8), rng.uniform(0.4, 0.7))
            sub = _protein(sub_mass, rng, "compact", ratios)
        else:
            sub = _protein(sub_mass, rng, str(rng.choice(["compact", "compact", "linear"])))
        sub_structure = sub.to_structure(name + "-subunit", source)
        out = symmetric_assembly(sub_structure, symmetry, rng, clearance_A=3.0, name=name)
        return Structure(name, out.xyz_A, out.atom_type, out.types, out.b_factor_A2,
                         f"{source} {symmetry.upper()}", symmetry.upper())
    if symmetry not in (None, "C1", "c1"):
        raise ValueError(f"kind {kind!r} is asymmetric; give symmetry only with a symmetric kind or 'random'")

    if kind == "globular":
        atoms = _protein(mass_kDa, rng, "compact")
    elif kind == "elongated":
        if rng.random() < 0.5 or mass_kDa < 80:
            atoms = _domain(mass_kDa, rng, (1.0, rng.uniform(0.25, 0.45), rng.uniform(0.2, 0.4)))
            if mass_kDa > 150:
                atoms = _pack([_domain(m, rng, (1.0, 0.5, 0.4)) for m in _split_mass(mass_kDa, rng)], rng,
                              "linear")
        else:
            atoms = _pack([_domain(m, rng) for m in _split_mass(mass_kDa, rng, 20.0, 70.0)], rng, "linear")
    elif kind == "flat":
        atoms = _pack([_domain(m, rng, (1.0, rng.uniform(0.8, 1.0), rng.uniform(0.3, 0.5)))
                       for m in _split_mass(mass_kDa, rng, 20.0, 80.0)], rng, "planar")
    elif kind == "multidomain":
        parts = []
        for m in _split_mass(mass_kDa, rng, 60.0, 300.0):
            parts.append(_protein(m, rng, str(rng.choice(["compact", "linear", "planar"]))))
        atoms = _pack(parts, rng, "compact")
    elif kind == "membrane":
        atoms = _membrane(mass_kDa, rng)
    else:  # ribosome
        atoms = _ribosome(mass_kDa, rng)
    return atoms.to_structure(name, source)
