"""Projected Coulomb potential of a structure, and a bank of projections for fast micrograph rendering.

`project_structure` computes, for any orientation, the projected potential in excess of the solvent the
particle displaces (V Å) on a square grid. Atoms are spread onto a 2x finer grid with bilinear weights,
one grid per element; in Fourier space each grid is multiplied by its atoms' transform

    47.878 [f_el(q) + n_H f_H(q)] exp(-B q^2 / 4)  -  V_ice * vol * exp(-2 pi^2 s^2 q^2),

(tabulated scattering factors, implicit hydrogens, thermal factor, and a Gaussian of the atom's displaced
volume filled with ice of mean inner potential V_ice; hydrogens and volumes averaged over the element's
atoms), divided by the spreading kernel's transform, summed, band-limited to the target pixel size and
transformed back. This costs one bincount and a few small FFTs per view, however many atoms the
structure has.

A `ViewBank` holds such projections for many orientations drawn uniformly from SO(3), plus copies
downsampled by factors of sqrt(2) (Fourier cropping). A micrograph at pixel size p takes the level just
finer than p and resamples each particle's view with its own in-plane rotation and sub-pixel position
(bilinear, batched). View direction times a uniform in-plane angle gives orientations uniform on SO(3)
up to the bank's angular sampling.
"""

from __future__ import annotations

import logging
import math
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft
import torch
import torch.nn.functional as F

from . import scattering as sc
from .structures import Structure, rotate_points
from .symmetry import random_rotations

log = logging.getLogger(__name__)

_OVERSAMPLE = 2


def _freq_grid(n: int, spacing_A: float) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (Å^-1) of an rfft2 layout of an ``n`` x ``n`` grid: (ky column, kx row)."""
    ky = np.fft.fftfreq(n, d=spacing_A)[:, None]
    kx = np.fft.rfftfreq(n, d=spacing_A)[None, :]
    return ky, kx


def atom_type_transforms(structure: Structure, q: np.ndarray) -> np.ndarray:
    """Fourier transform (V Å^3) of each atom type's excess potential at frequencies ``q`` (Å^-1).

    Returns an array of shape ``(n_types,) + q.shape``.
    """
    out = np.empty((len(structure.types),) + q.shape, dtype=np.float64)
    thermal = np.exp(-structure.b_factor_A2 * q**2 / 4.0)
    h_ft = sc.atom_potential_ft("H", q)
    for i, t in enumerate(structure.types):
        atom = sc.atom_potential_ft(t.element, q) + t.hydrogens * h_ft
        # Displaced solvent: a Gaussian of unit peak occupancy holding the atom's volume.
        sigma = (t.volume_A3 / (2.0 * math.pi) ** 1.5) ** (1.0 / 3.0)
        solvent = sc.ICE_MIP_V * t.volume_A3 * np.exp(-2.0 * math.pi**2 * sigma**2 * q**2)
        out[i] = atom * thermal - solvent
    return out


def box_size_px(radius_A: float, pixel_size_A: float) -> int:
    """Even view box side (pixels) holding everything within ``radius_A`` of the centre of mass.

    The excess potential vanishes a few ångströms beyond the outermost atom (atom and displaced-solvent
    profiles are ~1-2 Å wide), so 8 Å of margin plus two pixels for interpolation suffice; the view is
    later turned in the image plane, so the box holds the full circle.
    """
    n = int(math.ceil(2.0 * (radius_A + 8.0) / pixel_size_A)) + 4
    return n + (n % 2)


class _Projector:
    """Per-structure state for projecting many orientations at one pixel size."""

    def __init__(self, structure: Structure, pixel_size_A: float, box_px: int) -> None:
        if box_px % 2:
            raise ValueError("box_px must be even")
        self.structure = structure
        self.pixel_size_A = pixel_size_A
        self.box = box_px
        self.grid = box_px * _OVERSAMPLE
        self.h = pixel_size_A / _OVERSAMPLE
        # One grid per element: the FFTs dominate the cost, and atom types of one element differ only in
        # the hydrogens they carry and the volume they displace, which are averaged (count-weighted, so
        # the total potential is exact) over the element's atoms.
        elements = sorted({t.element for t in structure.types})
        type_channel = np.array([elements.index(t.element) for t in structure.types])
        channel = type_channel[structure.atom_type]
        self.order = np.argsort(channel, kind="stable")
        self.xyz = structure.xyz_A[self.order].astype(np.float32)
        self.type_offset = channel[self.order].astype(np.int64) * self.grid * self.grid
        self.n_types = len(elements)
        # Transforms on the kept band of the fine grid, with the bilinear kernel (sinc^2) divided out.
        b = box_px
        rows = np.r_[0: b // 2, self.grid - b // 2 + 1: self.grid]
        ky, kx = _freq_grid(self.grid, self.h)
        ky, kx = ky[rows], kx[:, : b // 2]
        q = np.sqrt(ky**2 + kx**2)
        kernel = (np.sinc(ky * self.h) * np.sinc(kx * self.h)) ** 2
        self.rows = rows
        per_type = atom_type_transforms(structure, q)
        counts = np.bincount(structure.atom_type, minlength=len(structure.types)).astype(np.float64)
        factors = np.zeros((self.n_types,) + q.shape)
        for t, c in enumerate(type_channel):
            total = counts[type_channel == c].sum()
            if total:
                factors[c] += per_type[t] * (counts[t] / total)
        self.factors = (factors / kernel).astype(np.complex64)

    def project(self, rotation: np.ndarray, atom_mask: np.ndarray | None = None) -> np.ndarray:
        """Projected excess potential (V Å), ``(box, box)`` float32, origin at index ``box // 2``."""
        g = self.grid
        if atom_mask is not None:
            atom_mask = np.asarray(atom_mask)[self.order]  # atoms are stored grouped by element
        xyz = self.xyz if atom_mask is None else self.xyz[atom_mask]
        offset = self.type_offset if atom_mask is None else self.type_offset[atom_mask]
        rot = np.asarray(rotation, dtype=np.float32) / np.float32(self.h)
        # Grid coordinates of every atom (image x = rotated x, image y = rotated y), origin at g // 2.
        x = rotate_points(xyz, rot[:1])[:, 0] + np.float32(g // 2)
        y = rotate_points(xyz, rot[1:2])[:, 0] + np.float32(g // 2)
        # Every atom lies inside the box (see `box_size_px`); clipping only guards the index.
        np.clip(x, 0, g - 1.001, out=x)
        np.clip(y, 0, g - 1.001, out=y)
        ix = x.astype(np.int64)
        iy = y.astype(np.int64)
        fx = x - ix
        fy = y - iy
        i00 = offset + iy * g + ix
        idx = np.concatenate([i00, i00 + 1, i00 + g, i00 + g + 1])
        w = np.concatenate([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx])
        with _torch_threads(1):
            counts = torch.bincount(torch.from_numpy(idx), torch.from_numpy(w),
                                    minlength=self.n_types * g * g)
        counts = counts.numpy().reshape(self.n_types, g, g)
        # Only the central band is kept: transform rows, drop the high columns, then transform columns.
        spec = sfft.rfft(counts, axis=-1)[..., : self.box // 2]
        spec = sfft.fft(spec, axis=-2)[:, self.rows]
        total = np.einsum("tij,tij->ij", spec, self.factors)
        b = self.box
        out = np.zeros((b, b // 2 + 1), dtype=np.complex64)
        out[: b // 2, : b // 2] = total[: b // 2]
        out[b // 2 + 1:, : b // 2] = total[b // 2:]
        return (sfft.irfft2(out, s=(b, b)) / self.pixel_size_A**2).astype(np.float32)


def project_structure(structure: Structure, rotations: np.ndarray, pixel_size_A: float,
                      box_px: int | None = None) -> np.ndarray:
    """Projected potential in excess of the displaced ice (V Å) for each rotation.

    Parameters
    ----------
    rotations : (3, 3) or (M, 3, 3) rotation matrices; the beam runs along the rotated z axis, image
        columns are rotated x and rows rotated y.
    pixel_size_A : sampling of the output (Å); the result is band-limited to its Nyquist frequency.
    box_px : even output side; default fits the particle (`box_size_px`).

    Returns
    -------
    (M, box, box) or (box, box) float32 array; the centre of mass projects to index ``box // 2``.
    """
    rot = np.asarray(rotations, dtype=np.float64)
    single = rot.ndim == 2
    rot = rot.reshape(-1, 3, 3)
    box = box_px or box_size_px(structure.max_radius_A, pixel_size_A)
    proj = _Projector(structure, pixel_size_A, box)
    out = np.stack([proj.project(r) for r in rot])
    return out[0] if single else out


def fourier_resize(images: np.ndarray, size: int) -> np.ndarray:
    """Resample square images ``(..., n, n)`` to ``(..., size, size)`` over the same field of view.

    Fourier cropping: sample values are preserved (not summed), the origin stays at index ``n // 2``,
    and nothing aliases.
    """
    n = images.shape[-1]
    spec = sfft.rfft2(images, axes=(-2, -1))
    half = min(n, size) // 2
    out = np.zeros(images.shape[:-2] + (size, size // 2 + 1), dtype=spec.dtype)
    out[..., :half, :half] = spec[..., :half, :half]
    out[..., size - half + 1:, :half] = spec[..., n - half + 1:, :half]
    # The image origin sits at index n//2; cropping keeps it at the centre only if we shift phases.
    ky = np.fft.fftfreq(size)[:, None]
    kx = np.fft.rfftfreq(size)[None, :]
    shift = (size // 2) - (n // 2) * size / n
    out *= np.exp(-2j * np.pi * (ky + kx) * shift)
    return (sfft.irfft2(out, s=(size, size), axes=(-2, -1)) * (size / n) ** 2).astype(np.float32)


@dataclass
class _Level:
    pixel_size_A: float
    views: torch.Tensor  # (V, B, B) float32


@dataclass
class ViewBank:
    """Projections of one structure in many orientations, at a ladder of pixel sizes."""

    name: str
    fingerprint: str
    diameter_A: float
    rotations: np.ndarray  # (V, 3, 3)
    levels: list[_Level] = field(default_factory=list)
    fragments: list[_Level] = field(default_factory=list)  # broken particles, for junk

    @property
    def n_views(self) -> int:
        return len(self.rotations)

    @property
    def view_directions(self) -> np.ndarray:
        """Beam direction in the structure frame for every view (V, 3)."""
        return self.rotations[:, 2, :]

    def nbytes(self) -> int:
        return sum(lv.views.numel() * 4 for lv in self.levels + self.fragments)

    def level_for(self, pixel_size_A: float, fragments: bool = False) -> _Level:
        """The level whose pixel is the largest not coarser than ``pixel_size_A``."""
        levels = self.fragments if fragments else self.levels
        chosen = levels[0]
        for lv in levels:
            if lv.pixel_size_A <= pixel_size_A * (1 + 1e-9):
                chosen = lv
        return chosen


def build_view_bank(structure: Structure, pixel_size_A: float, max_pixel_size_A: float, n_views: int = 256,
                    n_fragments: int = 16, seed: int = 0) -> ViewBank:
    """Project ``structure`` in ``n_views`` uniformly random orientations.

    Parameters
    ----------
    pixel_size_A : finest pixel size the bank will be used at (its base level).
    max_pixel_size_A : coarsest; levels are added by factors of sqrt(2) up to it.
    n_fragments : views of random pieces (30-70 % of the atoms, cut by a plane): broken particles.
    seed : orientation seed (combined with the structure's fingerprint).
    """
    ss = np.random.SeedSequence([seed, int(structure.fingerprint, 16) % (2**63)])
    rng = np.random.default_rng(ss)
    rotations = random_rotations(n_views, rng)
    box = box_size_px(structure.max_radius_A, pixel_size_A)
    proj = _Projector(structure, pixel_size_A, box)
    base = np.stack([proj.project(r) for r in rotations])
    frag_views = []
    for _ in range(n_fragments):
        normal = rng.standard_normal(3)
        normal /= np.linalg.norm(normal)
        d = rotate_points(structure.xyz_A, normal[None])[:, 0]
        cut = np.quantile(d, rng.uniform(0.3, 0.7))
        frag_views.append(proj.project(random_rotations(1, rng)[0], d < cut))
    fragments = np.stack(frag_views) if frag_views else np.zeros((0, box, box), np.float32)
    bank = ViewBank(structure.name, structure.fingerprint, structure.diameter_A, rotations)
    size = box
    p = pixel_size_A
    while True:
        bank.levels.append(_Level(p, torch.from_numpy(_level_views(base, size))))
        bank.fragments.append(_Level(p, torch.from_numpy(_level_views(fragments, size))))
        if p >= max_pixel_size_A or size <= 8:
            break
        new_size = max(8, int(round(size / math.sqrt(2) / 2)) * 2)
        p = pixel_size_A * box / new_size
        size = new_size
    log.debug("view bank %s: %d views, levels %s, %.1f MB", structure.name, n_views,
              [round(lv.pixel_size_A, 3) for lv in bank.levels], bank.nbytes() / 1e6)
    return bank


def _level_views(base: np.ndarray, size: int) -> np.ndarray:
    if base.shape[-1] == size:
        return np.ascontiguousarray(base, dtype=np.float32)
    if len(base) == 0:
        return np.zeros((0, size, size), np.float32)
    return fourier_resize(base, size)


_BANK_CACHE: OrderedDict[tuple, ViewBank] = OrderedDict()
_BANK_CACHE_BYTES = 600_000_000


def get_view_bank(structure: Structure, pixel_size_A: float, max_pixel_size_A: float, n_views: int = 256,
                  seed: int = 0) -> ViewBank:
    """`build_view_bank` with a small in-process cache (the set-up is done once per structure)."""
    key = (structure.fingerprint, round(pixel_size_A, 5), round(max_pixel_size_A, 5), n_views, seed)
    bank = _BANK_CACHE.get(key)
    if bank is not None:
        _BANK_CACHE.move_to_end(key)
        return bank
    bank = build_view_bank(structure, pixel_size_A, max_pixel_size_A, n_views, seed=seed)
    _BANK_CACHE[key] = bank
    while len(_BANK_CACHE) > 1 and sum(b.nbytes() for b in _BANK_CACHE.values()) > _BANK_CACHE_BYTES:
        _BANK_CACHE.popitem(last=False)
    return bank


def clear_cache() -> None:
    """Forget every cached view bank."""
    _BANK_CACHE.clear()


@contextmanager
def _torch_threads(n: int):
    """Run small torch kernels on ``n`` threads: on a busy machine, waking the pool costs more than it
    saves for the few-millisecond batches used here."""
    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if before != n:
            torch.set_num_threads(before)


def render_views(canvas: np.ndarray, level: _Level, view_index: np.ndarray, x: np.ndarray, y: np.ndarray,
                 psi_rad: np.ndarray, pixel_size_A: float, weight: np.ndarray | None = None,
                 chunk: int = 128) -> None:
    """Add rotated, resampled views into ``canvas`` (H, W) at sub-pixel centres ``(x, y)`` (pixels).

    The view's origin (the particle's centre of mass) lands exactly on ``(x, y)``; ``psi_rad`` turns each
    view in the image plane. ``weight`` scales each particle (1 by default).
    """
    n = len(view_index)
    if n == 0:
        return
    views = level.views
    b = views.shape[-1]
    s = pixel_size_A / level.pixel_size_A  # level pixels per micrograph pixel
    bo = 2 * int(math.ceil((b / 2) / s)) + 1
    height, width = canvas.shape
    base = np.arange(bo, dtype=np.float32)
    to_unit = 2.0 / (b - 1)  # level pixels -> grid_sample's [-1, 1]
    centre = (b // 2) * to_unit - 1.0
    views_np = views.numpy()
    for start in range(0, n, chunk):
        sl = slice(start, min(n, start + chunk))
        m = sl.stop - sl.start
        ox = np.round(x[sl]).astype(np.int64) - bo // 2
        oy = np.round(y[sl]).astype(np.int64) - bo // 2
        # Offsets of every output pixel from the particle centre (micrograph pixels): (m, 1, bo), (m, bo, 1).
        dx = (base[None, :] + (ox - x[sl]).astype(np.float32)[:, None])[:, None, :]
        dy = (base[None, :] + (oy - y[sl]).astype(np.float32)[:, None])[:, :, None]
        c = (np.cos(psi_rad[sl]) * s * to_unit).astype(np.float32)[:, None, None]
        si = (np.sin(psi_rad[sl]) * s * to_unit).astype(np.float32)[:, None, None]
        grid = np.empty((m, bo, bo, 2), np.float32)
        np.add(c * dx, si * dy, out=grid[..., 0])
        grid[..., 0] += centre
        np.subtract(c * dy, si * dx, out=grid[..., 1])
        grid[..., 1] += centre
        src = torch.from_numpy(np.take(views_np, view_index[sl], axis=0))[:, None]  # (m, 1, b, b)
        with _torch_threads(1):
            out = F.grid_sample(src, torch.from_numpy(grid), mode="bilinear", padding_mode="zeros",
                                align_corners=True)[:, 0].numpy()
        if weight is not None:
            out = out * weight[sl].astype(np.float32)[:, None, None]
        for k in range(m):
            x0, y0 = int(ox[k]), int(oy[k])
            cx0, cy0 = max(0, x0), max(0, y0)
            cx1, cy1 = min(width, x0 + bo), min(height, y0 + bo)
            if cx0 < cx1 and cy0 < cy1:
                canvas[cy0:cy1, cx0:cx1] += out[k, cy0 - y0: cy1 - y0, cx0 - x0: cx1 - x0]
