"""Reading truth and picks for scoring: coordinate files and folders, y flips, edges, micrographs.

Truth and picks come from any picker in any format `hydrapick.io` reads; these functions bring them onto
the micrographs' pixel grid (flipping y per micrograph where a tool counts it from the bottom) and onto
the same region (`drop_near_edge`), and find the micrograph files that give heights and pixel sizes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..config import COINCIDENT_LABEL_PX
from ..io.coordinates import check_one_file_per_micrograph
from ..io.errors import describe
from ..io.inputs import gather_inputs
from ..picks import Picks, micrograph_key
from .metrics import micrograph_keys

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CoordinateSet:
    """Coordinates read for evaluation and the micrographs they cover.

    ``micrographs`` (keys) includes micrographs whose per-micrograph file holds no particles, which
    `Picks` alone cannot carry: an empty truth file says "this micrograph has no particles".
    """

    picks: Picks
    micrographs: list[str]


def load_coordinates(path: str | os.PathLike, *, format: str | None = None, flip_y: bool = False,
                     image_height: int | Mapping[str, int] | None = None,
                     missing_height: str = "error") -> CoordinateSet:
    """Read a coordinate file or a folder of per-micrograph files in any format `hydrapick.io` reads.

    Parameters
    ----------
    path : path
        A file (``.star``, ``.box``, ``.cbox``, ``.txt`` Topaz, ``.cs``), a folder of such files, or a
        RELION job folder holding ``autopick.star``.
    format : str, optional
        Coordinate format for every file (default: from each extension).
    flip_y : bool
        Mirror y (``y -> height - 1 - y``) for tools that count y up from the bottom row.
    image_height : int or mapping of micrograph key -> int, optional
        Micrograph height(s) in pixels for ``flip_y``; a mapping flips each micrograph with its own
        height (cryoSPARC files carry their shapes and need none).
    missing_height : {"error", "drop"}
        With a mapping of heights: what to do with coordinates on a micrograph it lacks (see
        `flip_y_per_micrograph`).

    Raises
    ------
    hydrapick.io.FormatError
        Unreadable file (the message names it).
    ValueError
        ``flip_y`` without the height of a micrograph that has coordinates.
    """
    from .. import io

    path = Path(path)
    file_height = image_height if isinstance(image_height, int) else None
    read_flip = flip_y and not isinstance(image_height, Mapping)
    covered: list[str] = []
    if path.is_dir():
        picks, covered = io.read_coordinate_folder_with_empty(path, format, flip_y=read_flip,
                                                              image_height=file_height)
    else:
        picks = io.read_coordinates(path, format, flip_y=read_flip, image_height=file_height)
        check_one_file_per_micrograph([(describe(path), picks.micrograph)])
    if flip_y and isinstance(image_height, Mapping):
        picks = flip_y_per_micrograph(picks, image_height, missing=missing_height)
    keys = list(dict.fromkeys(micrograph_keys(picks.micrograph).tolist() + covered))
    return CoordinateSet(picks, keys)


def merge_coincident(picks: Picks, within_px: float = COINCIDENT_LABEL_PX) -> tuple[Picks, int]:
    """Keep one of each group of coordinates closer than ``within_px`` on the same micrograph.

    For labels (truth, training coordinates), where such a group is one particle written twice: each
    coordinate is kept unless an earlier one of its micrograph lies within ``within_px`` (micrograph
    pixels). Returns the picks kept, in their order, and how many were merged away.
    """
    if len(picks) < 2 or within_px <= 0:
        return picks, 0
    keep = np.ones(len(picks), dtype=bool)
    names = picks.micrograph.astype(str)
    for name in np.unique(names):
        rows = np.flatnonzero(names == name)
        if len(rows) < 2:
            continue
        xy = np.stack([picks.x[rows], picks.y[rows]], axis=1)
        for i, j in sorted(cKDTree(xy).query_pairs(r=within_px)):
            if keep[rows[i]]:  # i < j: the earlier of a pair stays, unless it went itself
                keep[rows[j]] = False
    return picks[keep], int((~keep).sum())


def flip_y_per_micrograph(picks: Picks, heights: Mapping[str, int], *, missing: str = "error") -> Picks:
    """Mirror y on each micrograph with its own height (``heights`` keyed by `micrograph_key`).

    ``missing="error"`` raises ValueError when a micrograph with coordinates has no height;
    ``missing="drop"`` leaves its coordinates out (logged as a warning).
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', got {missing!r}")
    heights = {micrograph_key(k): v for k, v in heights.items()}
    keys = micrograph_keys(picks.micrograph)
    absent = sorted(set(keys.tolist()) - set(heights))
    if absent and missing == "drop":
        known = np.array([k in heights for k in keys.tolist()], dtype=bool)
        log.warning("left out %d coordinates on %d micrographs without a known height (cannot flip y): %s",
                    int((~known).sum()), len(absent), _some(absent))
        picks, keys = picks[known], keys[known]
    elif absent:
        raise ValueError(f"flip_y needs the height of micrograph {absent[0]!r}"
                         + (f" and {len(absent) - 1} more" if len(absent) > 1 else "")
                         + "; no micrograph of that name was found")
    h = np.array([heights[k] for k in keys.tolist()], dtype=np.float64)
    return Picks(picks.micrograph.copy(), picks.x.copy(), h - 1 - picks.y, picks.score.copy(),
                 picks.diameter_px.copy())


def drop_near_edge(picks: Picks, shapes: Mapping[str, tuple[int, int]],
                   border_px: float | Mapping[str, float]) -> Picks:
    """Coordinates whose centre lies at least ``border_px`` inside the micrograph, as `hydrapick pick`
    keeps them (``border_px - 0.5 <= x < width - 0.5 - border_px``, the same for y).

    Applied to the truth and to every picker alike, it compares pickers with different edge rules on the
    same region. ``shapes`` (rows, columns) and a per-micrograph ``border_px`` are keyed by
    `micrograph_key`; a micrograph without a shape raises ValueError.
    """
    shapes = {micrograph_key(k): v for k, v in shapes.items()}
    keys = micrograph_keys(picks.micrograph)
    absent = sorted(set(keys.tolist()) - set(shapes))
    if absent:
        raise ValueError(f"the border needs the size of micrograph {absent[0]!r}"
                         + (f" and {len(absent) - 1} more" if len(absent) > 1 else "")
                         + "; no micrograph of that name was found")
    h = np.array([shapes[k][0] for k in keys.tolist()], dtype=np.float64)
    w = np.array([shapes[k][1] for k in keys.tolist()], dtype=np.float64)
    if isinstance(border_px, Mapping):
        border = {micrograph_key(k): v for k, v in border_px.items()}
        b = np.array([border[k] for k in keys.tolist()], dtype=np.float64)
    else:
        b = float(border_px)
    return picks.inside(h, w, b)


def check_inside(picks: Picks, source: str | os.PathLike,
                 shapes: Mapping[str, tuple[int, ...]] | None = None) -> None:
    """Refuse coordinates that cannot lie on their micrograph: negative ones always, and with ``shapes``
    (rows, columns, keyed by `micrograph_key`) those beyond the micrograph's size.

    Raises
    ------
    ValueError
        Naming ``source``, how many coordinates and the first of them (wrong file, or y flipped?).
    """
    keys = micrograph_keys(picks.micrograph)
    h = np.full(len(picks), np.inf)
    w = np.full(len(picks), np.inf)
    for i, key in enumerate(keys.tolist()):
        if shapes and key in shapes:
            h[i], w[i] = shapes[key][0], shapes[key][1]
    outside = (picks.x < -0.5) | (picks.y < -0.5) | (picks.x > w - 0.5) | (picks.y > h - 0.5)
    if outside.any():
        i = int(np.argmax(outside))
        size = f" of its {int(w[i])}x{int(h[i])} micrograph" if np.isfinite(w[i]) else " (negative)"
        raise ValueError(f"{describe(source)}: {int(outside.sum())} coordinate(s) lie outside their "
                         f"micrograph, the first ({picks.x[i]:g}, {picks.y[i]:g}) on '{keys[i]}'{size}; "
                         "wrong file, wrong micrographs, or y flipped (see --flip-y-truth)?")


def find_micrographs(spec: str | os.PathLike) -> dict[str, Path]:
    """Micrograph files named by ``spec`` (a folder, a glob, a file or a list; see
    `hydrapick.io.inputs.gather_inputs`), keyed by `micrograph_key`.

    Raises
    ------
    hydrapick.io.inputs.InputError
        ``spec`` names no micrograph.
    """
    return {micrograph_key(Path(m.path).name): Path(m.path) for m in gather_inputs([spec])}


def _some(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")

