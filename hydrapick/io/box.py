"""EMAN ``.box`` files: one micrograph per file, one particle per line.

Columns: ``x_corner  y_corner  width  height  [score]`` (tab-separated), where the corner is the centre
minus half the box (``x - w/2``, ``y - h/2``): the box's lower-left corner in EMAN's y-up display, as
EMAN, crYOLO and RELION write it. Coordinates are pixels of the micrograph as stored; there is no flip.
`write_box` writes whole pixels (the centre rounded, an even box), as RELION reads them.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..picks import Picks, micrograph_key
from ._text import number_rows, read_lines
from .atomic import write_text

_EXPECTED = "x_corner y_corner width height [score]"


def read_box(path: str | os.PathLike, micrograph: str | None = None) -> Picks:
    """Picks from an EMAN ``.box`` file (centre = corner + size/2; width becomes ``diameter_px``)."""
    path = Path(path)
    table = number_rows(read_lines(path), path, _EXPECTED, min_cols=4, max_cols=5)
    x = table[:, 0] + table[:, 2] / 2
    y = table[:, 1] + table[:, 3] / 2
    score = table[:, 4] if table.shape[1] == 5 else np.full(len(table), np.nan)
    name = micrograph if micrograph is not None else micrograph_key(path.name)
    return Picks(micrograph=name, x=x, y=y, score=score, diameter_px=table[:, 2])


def write_box(picks: Picks, path: str | os.PathLike, box_px: float | None = None) -> None:
    """Write one micrograph's picks as an EMAN ``.box`` file (atomic).

    Parameters
    ----------
    box_px : float, optional
        Box side in pixels; default each pick's ``diameter_px`` (which must then be known).
        A score column is added when the picks have scores.
    """
    if len(picks.micrographs()) > 1:
        raise ValueError(f"an EMAN .box file holds one micrograph; got picks on {len(picks.micrographs())} "
                         "(write one file per micrograph)")
    size = np.full(len(picks), float(box_px)) if box_px is not None else picks.diameter_px
    if len(picks) and (np.isnan(size).any() or (size <= 0).any()):
        raise ValueError(f"writing {path}: EMAN .box needs a box size; pass box_px or set Picks.diameter_px")
    # Whole pixels, an even box centred on the rounded pick: RELION reads the centre as corner + size / 2
    # in integers (Preprocessing::readCoordinates) and would drop fractions, up to 1.5 px off.
    side = np.maximum(2, 2 * np.rint(np.asarray(size, dtype=float) / 2)).astype(np.int64)
    cx, cy = np.rint(picks.x).astype(np.int64), np.rint(picks.y).astype(np.int64)
    lines = []
    for x, y, s, score in zip(cx, cy, side, picks.score, strict=True):
        fields = [str(x - s // 2), str(y - s // 2), str(s), str(s)]
        if picks.has_scores:
            fields.append(f"{score:.6g}")
        lines.append("\t".join(fields) + "\n")
    write_text(path, "".join(lines))
