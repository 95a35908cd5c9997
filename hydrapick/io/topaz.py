"""Topaz particle coordinate text: tab-separated, with a header line.

``image_name  x_coord  y_coord  score`` (``score`` is absent from Topaz label files). Topaz writes
integer pixel coordinates of the micrograph as stored and names images without their extension; one
file may hold many micrographs.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..picks import Picks
from ._text import name_without_extension, read_lines
from .atomic import write_text
from .errors import FormatError, describe

HEADER = ("image_name", "x_coord", "y_coord", "score")


def read_topaz(path: str | os.PathLike, micrograph: str | None = None) -> Picks:
    """Picks from a Topaz coordinate file (``micrograph`` is ignored: each row names its image)."""
    path = Path(path)
    rows = read_lines(path)
    if not rows:
        return Picks(x=[], y=[])
    header = rows[0][1].split()
    if header[:3] != list(HEADER[:3]):
        raise FormatError(f"{describe(path)} is not a Topaz coordinate file: expected a header "
                          f"'{' '.join(HEADER)}', found {' '.join(header)[:60]!r}", path)
    col = {name: i for i, name in enumerate(header)}
    names, xs, ys, scores = [], [], [], []
    for lineno, line in rows[1:]:
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) != len(header):
            raise FormatError(f"{describe(path)} line {lineno} has {len(fields)} columns; the header "
                              f"names {len(header)}", path)
        try:
            xs.append(float(fields[col["x_coord"]]))
            ys.append(float(fields[col["y_coord"]]))
            scores.append(float(fields[col["score"]]) if "score" in col else np.nan)
        except ValueError:
            raise FormatError(f"{describe(path)} line {lineno} has a non-numeric coordinate or score",
                              path) from None
        names.append(fields[col["image_name"]].strip())
    return Picks(micrograph=np.array(names, dtype=object), x=xs, y=ys, score=scores)


def write_topaz(picks: Picks, path: str | os.PathLike) -> None:
    """Write picks as Topaz coordinates (atomic).

    x and y are rounded to integers as Topaz writes them; image names lose folders and extension.
    """
    # Without any score the file is a Topaz label file (three columns), which Topaz reads for training.
    header = HEADER if picks.has_scores else HEADER[:3]
    lines = ["\t".join(header) + "\n"]
    for name, x, y, score in zip(picks.micrograph, picks.x, picks.y, picks.score, strict=True):
        fields = [name_without_extension(name), str(int(np.rint(x))), str(int(np.rint(y)))]
        if picks.has_scores:
            fields.append(f"{score:.6g}")
        lines.append("\t".join(fields) + "\n")
    write_text(path, "".join(lines))
