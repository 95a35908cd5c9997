"""crYOLO ``.cbox`` files (read only).

crYOLO 1.8+ writes a STAR file with a ``data_cryolo`` loop: ``_CoordinateX _CoordinateY _CoordinateZ
_Width _Height _Depth _EstWidth _EstHeight _Confidence _NumBoxes _Angle``, where ``_CoordinateX/Y`` are the
box corner (centre minus half the box) like an EMAN ``.box`` file. Older crYOLO wrote plain columns
``x_corner y_corner width height confidence ...``; both are read.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..picks import Picks, micrograph_key
from . import _star
from ._text import number_rows, read_lines
from .errors import FormatError, describe

_REQUIRED = ("_CoordinateX", "_CoordinateY", "_Width", "_Height")


def read_cbox(path: str | os.PathLike, micrograph: str | None = None) -> Picks:
    """Picks from a crYOLO ``.cbox`` file: centre = corner + size/2, score = ``_Confidence``."""
    path = Path(path)
    rows = read_lines(path)
    name = micrograph if micrograph is not None else micrograph_key(path.name)
    if not rows:
        return Picks(x=[], y=[])
    if any(line.startswith("data_") for _, line in rows):
        corner_x, corner_y, width, height, score = _read_star_cbox(path)
    else:
        table = number_rows(rows, path, "x_corner y_corner width height confidence ...", min_cols=4)
        corner_x, corner_y, width, height = table[:, :4].T
        score = table[:, 4] if table.shape[1] > 4 else np.full(len(table), np.nan)
    return Picks(micrograph=name, x=corner_x + width / 2, y=corner_y + height / 2, score=score,
                 diameter_px=width)


def _read_star_cbox(path: Path):
    blocks = _star.read(path)
    table = blocks.get("cryolo")
    if table is None:
        table = _star.find_loop(blocks, "_CoordinateX", path, "a crYOLO data_cryolo table")
    missing = [c for c in _REQUIRED if c not in table]
    if missing:
        raise FormatError(f"{describe(path)} has no {' '.join(missing)} column(s) (crYOLO cbox needs "
                          f"{' '.join(_REQUIRED)}); columns found: {', '.join(table) or 'none'}", path)
    cols = [np.array(_star.floats(table, c, path)) for c in _REQUIRED]
    score = (np.array(_star.floats(table, "_Confidence", path)) if "_Confidence" in table
             else np.full(table.n_rows, np.nan))
    return (*cols, score)
