"""Particles, aggregates and junk placed in the field of view, with the label policy of `scene`.

Split from `scene` (support film, ice, contamination), whose ``Support`` and ``Contamination`` decide
where a particle is labelled; everything is drawn from the generator passed in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..config import SimulationConfig
from .scene import Contamination, Support


# --- particles ----------------------------------------------------------------------------------------
@dataclass
class Particles:
    """Placed copies of the structure (micrograph pixels) and why each is or is not a pick."""

    x: np.ndarray
    y: np.ndarray
    view: np.ndarray
    psi_rad: np.ndarray
    aggregate: np.ndarray  # aggregate id, -1 for free particles
    reason: np.ndarray  # "" for picks

    @property
    def labelled(self) -> np.ndarray:
        return self.reason == ""

    def to_dict(self) -> dict:
        return {"n_placed": int(len(self.x)), "n_labelled": int(self.labelled.sum()),
                "x_px": np.round(self.x, 2).tolist(), "y_px": np.round(self.y, 2).tolist(),
                "view": self.view.tolist(), "psi_deg": np.round(np.degrees(self.psi_rad), 2).tolist(),
                "aggregate": self.aggregate.tolist(), "reason": self.reason.tolist()}


class _Hash:
    """Uniform-grid spatial hash for minimum-distance checks while dart throwing."""

    def __init__(self, cell: float) -> None:
        self.cell = max(cell, 1e-3)
        self.cells: dict[tuple[int, int], list[tuple[float, float]]] = {}

    def add(self, x: float, y: float) -> None:
        self.cells.setdefault((int(x // self.cell), int(y // self.cell)), []).append((x, y))

    def clear_of(self, x: float, y: float, dmin: float) -> bool:
        cx, cy = int(x // self.cell), int(y // self.cell)
        reach = int(math.ceil(dmin / self.cell))
        d2 = dmin * dmin
        for i in range(cx - reach, cx + reach + 1):
            for j in range(cy - reach, cy + reach + 1):
                for px, py in self.cells.get((i, j), ()):
                    if (px - x) ** 2 + (py - y) ** 2 < d2:
                        return False
        return True


def _orientation_weights(directions: np.ndarray, config: SimulationConfig, rng: np.random.Generator):
    """Per-view probabilities: uniform, or concentrated around one or two preferred directions."""
    if rng.random() >= config.preferred_orientation_probability:
        return None, {}
    kappa = float(rng.uniform(*config.preferred_orientation_kappa_range))
    n_pref = int(rng.integers(1, 3))
    centres = rng.standard_normal((n_pref, 3))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    # Particles lie on the air-water interface: a view and its opposite are equally likely.
    score = np.abs(directions @ centres.T).max(1)
    w = np.exp(kappa * (score - 1.0)) + 0.05
    return w / w.sum(), {"kappa": round(kappa, 3), "directions": np.round(centres, 4).tolist()}


def place_particles(shape: tuple[int, int], diameter_px: float, n_views: int, view_directions: np.ndarray,
                    config: SimulationConfig, rng: np.random.Generator, support: Support,
                    contamination: Contamination) -> tuple[Particles, dict]:
    """Dart-throw free particles and grow aggregates; assign views, in-plane angles and label reasons."""
    h, w = shape
    radius = diameter_px / 2
    info: dict = {}
    if config.n_particles is not None:
        n_free = int(config.n_particles)
        coverage = n_free * math.pi * radius**2 / (h * w)
    else:
        coverage = float(rng.uniform(*config.coverage_range))
        n_free = int(round(coverage * h * w / (math.pi * radius**2)))
    n_free = min(n_free, config.max_particles)
    separation = float(rng.uniform(*config.min_separation_range)) * diameter_px
    film_density = float(rng.uniform(*config.carbon_particle_density_range))
    info.update(coverage=round(coverage, 4), separation_px=round(separation, 2),
                film_density=round(film_density, 3))
    grid = _Hash(separation)
    xs: list[float] = []
    ys: list[float] = []
    agg: list[int] = []

    # Aggregates first (they are placed wherever, free particles keep their distance from them).
    n_aggregates = 0
    if rng.random() < config.aggregate_probability and config.max_particles > 0:
        n_aggregates = int(rng.integers(config.aggregates_range[0], config.aggregates_range[1] + 1))
    for a in range(n_aggregates):
        size = int(rng.integers(config.aggregate_size_range[0], config.aggregate_size_range[1] + 1))
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        members = [(cx, cy)]
        tries = 0
        while len(members) < size and tries < 50 * size:
            tries += 1
            bx, by = members[int(rng.integers(len(members)))]
            ang = rng.uniform(0, 2 * math.pi)
            d = rng.uniform(0.55, 0.9) * diameter_px
            nx, ny = bx + d * math.cos(ang), by + d * math.sin(ang)
            if all((nx - mx) ** 2 + (ny - my) ** 2 >= (0.5 * diameter_px) ** 2 for mx, my in members):
                members.append((nx, ny))
        for mx, my in members:
            xs.append(mx)
            ys.append(my)
            agg.append(a)
            grid.add(mx, my)

    # Free particles, also just outside the image so that its border cuts some.
    tries = 0
    placed = 0
    on_film = support.on_film
    while placed < n_free and tries < 30 * n_free + 100:
        tries += 1
        x = rng.uniform(-radius, w - 1 + radius)
        y = rng.uniform(-radius, h - 1 + radius)
        if on_film is not None:
            film = bool(on_film[int(np.clip(round(y), 0, h - 1)), int(np.clip(round(x), 0, w - 1))])
            keep = min(1.0, film_density) if film else min(1.0, 1.0 / max(film_density, 1e-6))
            if rng.random() >= keep:
                continue
        if not grid.clear_of(x, y, separation):
            continue
        grid.add(x, y)
        xs.append(x)
        ys.append(y)
        agg.append(-1)
        placed += 1
    x = np.asarray(xs, dtype=np.float64)
    y = np.asarray(ys, dtype=np.float64)
    n = len(x)
    weights, pref = _orientation_weights(view_directions, config, rng)
    view = rng.choice(n_views, size=n, p=weights) if n else np.zeros(0, np.int64)
    psi = rng.uniform(0, 2 * math.pi, n)
    info["preferred_orientation"] = pref
    info["aggregates"] = n_aggregates

    reason = np.full(n, "", dtype=object)
    margin = config.label_edge_margin * radius
    overlap = np.zeros(n, bool)
    if n > 1 and not config.label_overlapping:
        from scipy.spatial import cKDTree

        d, _ = cKDTree(np.stack([x, y], 1)).query(np.stack([x, y], 1), k=2)
        overlap = d[:, 1] < config.overlap_fraction * diameter_px
    edge = (x < margin) | (y < margin) | (x > w - 1 - margin) | (y > h - 1 - margin)
    film = np.zeros(n, bool)
    if on_film is not None and n:
        film = on_film[np.clip(np.round(y).astype(int), 0, h - 1), np.clip(np.round(x).astype(int), 0, w - 1)]
    contaminated = contamination.covers(x, y)
    aggregated = np.asarray(agg) >= 0
    for flag, allowed, why in ((overlap, config.label_overlapping, "overlap"),
                               (aggregated, config.label_in_aggregates, "aggregate"),
                               (contaminated, config.label_on_contamination, "contamination"),
                               (film, config.label_on_carbon, "carbon"),
                               (edge, False, "edge")):
        if not allowed:
            reason[flag] = why  # later (higher-precedence) reasons overwrite earlier ones
    particles = Particles(x, y, view.astype(np.int64), psi, np.asarray(agg, dtype=np.int64),
                          reason.astype(str))
    return particles, info


# --- junk ---------------------------------------------------------------------------------------------
@dataclass
class Junk:
    """Broken particles (views of random pieces) and denatured blobs (clusters of protein spheres)."""

    fragments: dict = field(default_factory=dict)  # x, y, view, psi arrays
    blobs: list = field(default_factory=list)  # (x_px, y_px, radius_px, excess potential V)

    def to_dict(self) -> dict:
        return {"fragments": int(len(self.fragments.get("x", []))), "blob_lobes": len(self.blobs)}


def draw_junk(shape: tuple[int, int], diameter_px: float, n_particles: int, n_fragment_views: int,
              config: SimulationConfig, rng: np.random.Generator) -> Junk:
    h, w = shape
    n = int(round(float(rng.uniform(*config.junk_fraction_range)) * max(n_particles, 8)))
    junk = Junk()
    kinds = rng.random(n)
    n_frag = int((kinds < 0.5).sum()) if n_fragment_views else 0
    junk.fragments = {"x": rng.uniform(0, w, n_frag), "y": rng.uniform(0, h, n_frag),
                      "view": rng.integers(0, max(n_fragment_views, 1), n_frag),
                      "psi": rng.uniform(0, 2 * math.pi, n_frag)}
    for _ in range(n - n_frag):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        size = rng.uniform(0.1, 0.7) * diameter_px
        dv = rng.uniform(0.8, 2.5)  # excess potential over ice (V): loosely packed denatured protein
        for _ in range(int(rng.integers(2, 12))):
            ox, oy = rng.normal(0, 0.6 * size, 2)
            junk.blobs.append((cx + ox, cy + oy, max(0.8, size * rng.uniform(0.15, 0.5)), dv))
    return junk


def render_blobs(canvas: np.ndarray, blobs: list, pixel_size_A: float, rng: np.random.Generator) -> None:
    """Add spheres of uniform excess potential (projected: V x chord length) with a lumpy texture."""
    h, w = canvas.shape
    for x, y, r, dv in blobs:
        x0, x1 = max(0, int(x - r - 2)), min(w, int(x + r + 3))
        y0, y1 = max(0, int(y - r - 2)), min(h, int(y + r + 3))
        if x0 >= x1 or y0 >= y1:
            continue
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - y
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - x
        chord = 2.0 * np.sqrt(np.clip(r * r - xx**2 - yy**2, 0.0, None)) * pixel_size_A
        lumps = 1.0 + 0.35 * rng.standard_normal(chord.shape).astype(np.float32)
        canvas[y0:y1, x0:x1] += dv * chord * lumps
