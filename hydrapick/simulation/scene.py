"""What is in the field of view: support film, ice and contamination (particles and junk: `particles`).

Geometry is drawn here (in micrograph pixels) together with the label policy; `micrograph` turns it into
an image. Everything is drawn from the generator passed in.

Label policy (`SimulationConfig.label_*`): every placed particle gets a ``reason`` it is *not* a pick,
or ``""`` when it is one. In order of precedence:

``edge``           centre closer than ``label_edge_margin`` x radius to the image border (or outside it;
                   particles are also placed just outside the image so that the border cuts some);
``carbon``         centre over the carbon film outside the hole (unless ``label_on_carbon``);
``contamination``  centre under a contamination ball, speck or ice crystal (unless
                   ``label_on_contamination``);
``aggregate``      part of an aggregate (unless ``label_in_aggregates``);
``overlap``        another particle's centre within ``overlap_fraction`` x diameter (only when
                   ``label_overlapping`` is false).

Junk (broken particles, denatured blobs) and contamination are never labelled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import SimulationConfig


def _cubic_weights(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) cubic-convolution (Catmull-Rom) interpolation matrix from ``n_in`` nodes spanning the
    output with one node of margin on each side."""
    pos = 1.0 + np.linspace(0.0, n_in - 3.0, n_out)  # output positions in node units
    i0 = np.floor(pos).astype(int)
    t = pos - i0
    w = np.zeros((n_out, n_in), np.float32)
    coeffs = (-0.5 * t**3 + t**2 - 0.5 * t, 1.5 * t**3 - 2.5 * t**2 + 1, -1.5 * t**3 + 2 * t**2 + 0.5 * t,
              0.5 * t**3 - 0.5 * t**2)
    rows = np.arange(n_out)
    for k, c in enumerate(coeffs):
        np.add.at(w, (rows, np.clip(i0 - 1 + k, 0, n_in - 1)), c)
    return w


def smooth_field(shape: tuple[int, int], rng: np.random.Generator, cells: int = 6) -> np.ndarray:
    """Smooth random field of unit standard deviation (features ~ shape / cells), float32.

    Random values on a coarse grid, interpolated by cubic convolution as two small matrix products.
    """
    coarse = rng.standard_normal((cells + 3, cells + 3)).astype(np.float32)
    rows = _cubic_weights(shape[0], cells + 3) @ coarse  # (H, m)
    cols = _cubic_weights(shape[1], cells + 3).T  # (m, W)
    # A sum of rank-one products: BLAS is slow for such thin matrices.
    out = np.zeros(shape, np.float32)
    tmp = np.empty(shape, np.float32)
    for j in range(cols.shape[0]):
        np.multiply(rows[:, j: j + 1], cols[j: j + 1], out=tmp)
        out += tmp
    sd = float(out.std())
    return (out - out.mean()) / (sd if sd > 0 else 1.0)


def _plane(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A tilted plane over the image, from -0.5 to 0.5 along a random direction (float32)."""
    a = rng.uniform(0, 2 * math.pi)
    yy = np.linspace(-0.5, 0.5, shape[0], dtype=np.float32)[:, None]
    xx = np.linspace(-0.5, 0.5, shape[1], dtype=np.float32)[None, :]
    return (math.cos(a) * xx + math.sin(a) * yy) / max(abs(math.cos(a)) + abs(math.sin(a)), 1e-6)


# --- support film and ice -----------------------------------------------------------------------------
@dataclass
class Support:
    """Carbon film: the hole edge (if any) and a thin continuous layer (if any)."""

    carbon_A: np.ndarray | None = None  # (H, W) carbon thickness in Å
    on_film: np.ndarray | None = None  # (H, W) bool: outside the hole
    edge_distance_px: np.ndarray | None = None  # signed distance to the hole edge (> 0 on the film)
    hole: dict = field(default_factory=dict)
    continuous_A: float = 0.0

    def to_dict(self) -> dict:
        return {"hole": self.hole, "continuous_carbon_A": self.continuous_A}


def draw_support(shape: tuple[int, int], pixel_size_A: float, config: SimulationConfig,
                 rng: np.random.Generator) -> Support:
    h, w = shape
    sup = Support()
    hole = rng.random() < config.carbon_probability
    continuous = rng.random() < config.continuous_carbon_probability
    thickness = np.zeros(shape, np.float32)
    if hole:
        radius_px = float(rng.uniform(*config.hole_radius_A_range)) / pixel_size_A
        # Put the hole's centre so that its edge crosses the image somewhere between near a corner
        # and close to the middle (the film covers 5-60 % of the image).
        ang = rng.uniform(0, 2 * math.pi)
        half_diag = 0.5 * math.hypot(h, w)
        edge_offset = rng.uniform(-0.6, 0.75) * half_diag  # edge position from the image centre
        dist = radius_px - edge_offset
        cx = (w - 1) / 2 - math.cos(ang) * dist
        cy = (h - 1) / 2 - math.sin(ang) * dist
        yy = np.arange(h, dtype=np.float32)[:, None]
        xx = np.arange(w, dtype=np.float32)[None, :]
        signed = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - radius_px
        t = float(rng.uniform(*config.carbon_thickness_A_range))
        # A film edge is not a knife edge: it tapers over ~5-40 nm.
        ramp_px = max(1.0, rng.uniform(50.0, 400.0) / pixel_size_A)
        film = np.clip(signed / ramp_px + 0.5, 0.0, 1.0)
        film *= 1.0 + 0.03 * smooth_field(shape, rng, 5)
        thickness += t * film
        sup.on_film = signed > 0
        sup.edge_distance_px = signed
        sup.hole = {"centre_x_px": round(cx, 2), "centre_y_px": round(cy, 2),
                    "radius_px": round(radius_px, 2), "carbon_thickness_A": round(t, 2),
                    "film_fraction": round(float(sup.on_film.mean()), 4)}
    if continuous:
        sup.continuous_A = float(rng.uniform(*config.continuous_carbon_thickness_A_range))
        thickness += sup.continuous_A
    if hole or continuous:
        sup.carbon_A = thickness
    return sup


def ice_thickness_map(shape: tuple[int, int], pixel_size_A: float, mean_A: float, gradient: float,
                      support: Support, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """Ice thickness (Å) over the image: a gradient, smooth undulation, a meniscus at the hole edge and a
    thin layer over the carbon film."""
    t = mean_A * (1.0 + gradient * _plane(shape, rng) + 0.1 * gradient * smooth_field(shape, rng, 4))
    info: dict = {"mean_A": round(mean_A, 2), "gradient": round(gradient, 4)}
    if support.edge_distance_px is not None:
        # Ice thickens towards the hole edge (meniscus) and is thin on top of the film.
        rise = float(rng.uniform(0.1, 0.6)) * mean_A
        width_px = float(rng.uniform(300.0, 1500.0)) / pixel_size_A
        on_film_frac = float(rng.uniform(0.4, 1.0))
        d = support.edge_distance_px
        inside = np.exp(np.minimum(d, 0.0) / width_px) * rise
        t = np.where(d > 0, mean_A * on_film_frac, t + inside)
        info.update(meniscus_A=round(rise, 1), meniscus_width_A=round(width_px * pixel_size_A, 1),
                    on_film_fraction=round(on_film_frac, 3))
    return np.maximum(t, 0.2 * mean_A).astype(np.float32), info


# --- contamination ------------------------------------------------------------------------------------
@dataclass
class Contamination:
    """Objects on the ice surface: their ice-equivalent thickness (phase) and optical depth (loss)."""

    thickness_A: np.ndarray | None = None
    optical_depth: np.ndarray | None = None
    objects: list = field(default_factory=list)

    def covers(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """True where a point lies under contamination."""
        if self.optical_depth is None:
            return np.zeros(len(x), bool)
        h, w = self.optical_depth.shape
        xi = np.clip(np.round(x).astype(int), 0, w - 1)
        yi = np.clip(np.round(y).astype(int), 0, h - 1)
        return self.optical_depth[yi, xi] > 0.05


def _add_sphere(thick, depth, x, y, r_px, pixel_size_A, mfp_A, density=1.0):
    h, w = thick.shape
    x0, x1 = max(0, int(x - r_px - 2)), min(w, int(x + r_px + 3))
    y0, y1 = max(0, int(y - r_px - 2)), min(h, int(y + r_px + 3))
    if x0 >= x1 or y0 >= y1:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
    xx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
    rho2 = xx**2 + yy**2
    # Soft edge over one pixel keeps the phase step band-limited.
    chord = 2.0 * np.sqrt(np.clip(r_px**2 - rho2, 0.0, None) + 0.25 * np.exp(-np.maximum(rho2 - r_px**2, 0)))
    chord = np.where(rho2 < (r_px + 1.5) ** 2, chord, 0.0) * pixel_size_A * density
    thick[y0:y1, x0:x1] += chord
    depth[y0:y1, x0:x1] += chord / mfp_A


def _add_polygon(thick, depth, x, y, radius_px, n_sides, regular, rng, slab_A, mfp_A):
    h, w = thick.shape
    angles = np.sort(rng.uniform(0, 2 * math.pi, n_sides)) if not regular else \
        rng.uniform(0, 2 * math.pi) + np.arange(n_sides) * 2 * math.pi / n_sides
    radii = radius_px * (np.ones(n_sides) if regular else rng.uniform(0.6, 1.0, n_sides))
    vx = x + radii * np.cos(angles)
    vy = y + radii * np.sin(angles)
    x0, x1 = max(0, int(vx.min() - 2)), min(w, int(vx.max() + 3))
    y0, y1 = max(0, int(vy.min() - 2)), min(h, int(vy.max() + 3))
    if x0 >= x1 or y0 >= y1:
        return
    yy = np.arange(y0, y1, dtype=np.float32)[:, None]
    xx = np.arange(x0, x1, dtype=np.float32)[None, :]
    # Convex polygon as the intersection of half-planes: signed distance = max over edges.
    sd = np.full((y1 - y0, x1 - x0), -np.inf, dtype=np.float32)
    for i in range(n_sides):
        ax, ay, bx, by = vx[i], vy[i], vx[(i + 1) % n_sides], vy[(i + 1) % n_sides]
        nx, ny = by - ay, -(bx - ax)
        norm = math.hypot(nx, ny) or 1.0
        sd = np.maximum(sd, ((xx - ax) * nx + (yy - ay) * ny) / norm)
    inside = np.clip(0.5 - sd, 0.0, 1.0)
    thick[y0:y1, x0:x1] += inside * slab_A
    depth[y0:y1, x0:x1] += inside * slab_A / mfp_A


def _object_radius_px(rng: np.random.Generator, lo_A: float, hi_A: float, pixel_size_A: float,
                      side_px: int) -> float:
    """Radius (pixels) of a contamination object: log-uniform in ``[lo_A, hi_A]``, but at most a quarter
    of the image side. Micrographs that ice or contamination dominate are discarded in practice, so
    they would be poor training material however physical."""
    hi = min(hi_A / pixel_size_A, 0.25 * side_px)
    lo = min(lo_A / pixel_size_A, 0.5 * hi)
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def draw_contamination(shape: tuple[int, int], pixel_size_A: float, config: SimulationConfig,
                       rng: np.random.Generator) -> Contamination:
    """Contamination balls and specks (amorphous, dark) and ice crystals (polygons, very dark)."""
    h, w = shape
    out = Contamination()
    balls = rng.random() < config.contamination_probability
    crystals = rng.random() < config.ice_crystal_probability
    if not (balls or crystals):
        return out
    thick = np.zeros(shape, np.float32)
    depth = np.zeros(shape, np.float32)
    if balls:
        # A few large balls (ethane, frost) and, sometimes, a sprinkle of small specks.
        for _ in range(int(rng.integers(0, 4))):
            r = _object_radius_px(rng, 150.0, 1500.0, pixel_size_A, min(h, w))
            x, y = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h)
            _add_sphere(thick, depth, x, y, r, pixel_size_A, 1500.0, rng.uniform(0.6, 1.0))
            out.objects.append({"kind": "ball", "x_px": round(x, 1), "y_px": round(y, 1),
                                "radius_A": round(r * pixel_size_A, 1)})
        n_specks = int(rng.integers(0, 25)) if rng.random() < 0.5 else 0
        for _ in range(n_specks):
            r = rng.uniform(15.0, 60.0) / pixel_size_A
            x, y = rng.uniform(0, w), rng.uniform(0, h)
            _add_sphere(thick, depth, x, y, max(r, 0.7), pixel_size_A, 2500.0, rng.uniform(0.5, 1.0))
        out.objects.append({"kind": "specks", "count": n_specks})
    if crystals:
        for _ in range(int(rng.integers(1, 4))):
            r = _object_radius_px(rng, 300.0, 3000.0, pixel_size_A, min(h, w))
            x, y = rng.uniform(-0.1 * w, 1.1 * w), rng.uniform(-0.1 * h, 1.1 * h)
            regular = rng.random() < 0.5
            sides = 6 if regular else int(rng.integers(4, 9))
            slab = rng.uniform(800.0, 3000.0)
            # Crystalline ice diffracts electrons out of the objective aperture: far darker than its
            # thickness of amorphous ice would be.
            _add_polygon(thick, depth, x, y, r, sides, regular, rng, slab, 700.0)
            out.objects.append({"kind": "ice_crystal", "x_px": round(x, 1), "y_px": round(y, 1),
                                "radius_A": round(r * pixel_size_A, 1), "thickness_A": round(slab, 1)})
    out.thickness_A = thick
    out.optical_depth = depth
    return out
