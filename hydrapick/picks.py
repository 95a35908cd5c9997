"""The `Picks` container: particle coordinates shared by I/O, picking, simulation and evaluation.

Coordinates are in pixels of the micrograph as read (`data[y, x]`), origin at the centre of the first
pixel, y growing downwards with the row index. Any flip is explicit (see `Picks.flip_y`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import PurePath

import numpy as np


def micrograph_key(name: str) -> str:
    """Name used to match micrographs across files and formats.

    The stem of the file name without directories, extensions or the suffixes that pickers add
    (``_autopick``, ``_manualpick``, ``_picks``), so ``Movies/mic_001.mrc``,
    ``mic_001_autopick.star`` and ``mic_001`` all match.
    """
    stem = PurePath(str(name).replace("\\", "/")).name
    for ext in (".mrcs", ".mrc", ".star", ".box", ".cbox", ".txt", ".cs", ".tif", ".tiff", ".png", ".jpg",
                ".jpeg"):
        if stem.lower().endswith(ext):
            stem = stem[: -len(ext)]
            break
    for suffix in ("_autopick", "_manualpick", "_picks", "_coords"):
        if stem.endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    return stem


@dataclass
class Picks:
    """Particle positions on one or more micrographs.

    Parameters
    ----------
    micrograph : (N,) array of str
        Micrograph name of each pick (a path as given by the user or the source file).
    x, y : (N,) float64 arrays
        Centre in pixels of the micrograph as read; ``data[y, x]``.
    score : (N,) float64 array
        Confidence; NaN when the source has none.
    diameter_px : (N,) float64 array
        Particle diameter (box side) in micrograph pixels; NaN when unknown.
    """

    micrograph: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=object))
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    score: np.ndarray = field(default_factory=lambda: np.zeros(0))
    diameter_px: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __post_init__(self) -> None:
        n = len(self.x)
        self.x = np.asarray(self.x, dtype=np.float64).reshape(-1)
        self.y = np.asarray(self.y, dtype=np.float64).reshape(-1)
        self.micrograph = _broadcast(self.micrograph, n, object, "")
        self.score = _broadcast(self.score, n, np.float64, np.nan)
        self.diameter_px = _broadcast(self.diameter_px, n, np.float64, np.nan)
        for name in ("y", "micrograph", "score", "diameter_px"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Picks.{name} has {len(getattr(self, name))} entries, x has {n}")

    @classmethod
    def empty(cls) -> Picks:
        return cls()

    @classmethod
    def concat(cls, parts: Iterable[Picks]) -> Picks:
        parts = list(parts)
        if not parts:
            return cls.empty()
        return cls(
            micrograph=np.concatenate([p.micrograph for p in parts]),
            x=np.concatenate([p.x for p in parts]),
            y=np.concatenate([p.y for p in parts]),
            score=np.concatenate([p.score for p in parts]),
            diameter_px=np.concatenate([p.diameter_px for p in parts]),
        )

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index) -> Picks:
        """Select picks with a boolean mask, an index array or a slice."""
        return Picks(
            micrograph=self.micrograph[index],
            x=self.x[index],
            y=self.y[index],
            score=self.score[index],
            diameter_px=self.diameter_px[index],
        )

    @property
    def has_scores(self) -> bool:
        return bool(len(self)) and not np.all(np.isnan(self.score))

    def micrographs(self) -> list[str]:
        """Distinct micrograph names in order of first appearance."""
        return list(dict.fromkeys(self.micrograph.tolist()))

    def by_micrograph(self) -> Iterator[tuple[str, Picks]]:
        """Yield ``(name, picks_on_that_micrograph)`` in order of first appearance."""
        for name in self.micrographs():
            yield name, self[self.micrograph == name]

    def for_micrograph(self, name: str) -> Picks:
        """Picks whose micrograph matches ``name`` by `micrograph_key`."""
        key = micrograph_key(name)
        keys = np.array([micrograph_key(m) for m in self.micrograph], dtype=object)
        return self[keys == key] if len(self) else Picks.empty()

    def with_micrograph(self, name: str) -> Picks:
        """A copy with every pick assigned to micrograph ``name``."""
        return Picks(name, self.x.copy(), self.y.copy(), self.score.copy(), self.diameter_px.copy())

    def above(self, threshold: float) -> Picks:
        """Picks with a score at or above ``threshold`` (picks without a score are kept)."""
        return self[~(self.score < threshold)]

    def inside(self, height, width, border_px=0.0) -> Picks:
        """Picks whose centre lies at least ``border_px`` inside an image of ``height`` x ``width`` pixels
        (``border_px - 0.5 <= x < width - 0.5 - border_px``, the same for y; pixel centres at integers).

        Each argument is a number or an array with one value per pick (micrographs of different sizes).
        """
        b = np.asarray(border_px, dtype=np.float64)
        w = np.asarray(width, dtype=np.float64)
        h = np.asarray(height, dtype=np.float64)
        keep = (self.x >= b - 0.5) & (self.x < w - 0.5 - b) & (self.y >= b - 0.5) & (self.y < h - 0.5 - b)
        return self[keep]

    def flip_y(self, height: int | float) -> Picks:
        """Mirror y for an image of ``height`` pixels: ``y -> height - 1 - y``."""
        return Picks(self.micrograph.copy(), self.x.copy(), height - 1 - self.y, self.score.copy(),
                     self.diameter_px.copy())

    def scaled(self, factor: float) -> Picks:
        """Coordinates and diameters multiplied by ``factor`` (for resampled micrographs)."""
        return Picks(self.micrograph.copy(), self.x * factor, self.y * factor, self.score.copy(),
                     self.diameter_px * factor)

    def sorted_by_score(self) -> Picks:
        order = np.argsort(-np.nan_to_num(self.score, nan=-np.inf), kind="stable")
        return self[order]

    def __repr__(self) -> str:
        return f"Picks({len(self)} picks on {len(self.micrographs())} micrographs)"


def _broadcast(values, n: int, dtype, fill) -> np.ndarray:
    if values is None:
        return np.full(n, fill, dtype=dtype)
    if isinstance(values, (str, float, int, np.floating, np.integer)):
        return np.full(n, values, dtype=dtype)
    arr = np.asarray(values, dtype=dtype).reshape(-1)
    if len(arr) == 0 and n:
        return np.full(n, fill, dtype=dtype)
    return arr
