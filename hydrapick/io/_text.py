"""Helpers for whitespace-separated coordinate text files (EMAN .box, Topaz, old crYOLO .cbox)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .errors import FormatError, describe, read_text_file


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-empty, non-comment lines with their 1-based line numbers."""
    text = read_text_file(path, "is not a text file")
    return [(i, line.strip()) for i, line in enumerate(text.splitlines(), start=1)
            if line.strip() and not line.lstrip().startswith("#")]


def number_rows(rows: list[tuple[int, str]], path: Path, expected: str, min_cols: int,
                max_cols: int | None = None) -> np.ndarray:
    """Parse rows of numbers into a (N, C) float array; a FormatError naming the first bad line."""
    values = []
    width = None
    for lineno, line in rows:
        fields = line.split()
        n = len(fields)
        if n < min_cols or (max_cols is not None and n > max_cols) or (width is not None and n != width):
            raise FormatError(f"{describe(path)} line {lineno} has {n} columns; {expected} was expected",
                              path)
        width = n
        try:
            values.append([float(f) for f in fields])
        except ValueError:
            raise FormatError(f"{describe(path)} line {lineno} is not numeric ({_clip(line)!r}); "
                              f"{expected} was expected", path) from None
    return np.array(values, dtype=np.float64).reshape(len(values), width or min_cols)


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def fmt(value: float) -> str:
    """Shortest fixed-point text for a coordinate: ``100`` for 100.0, ``12.345`` for 12.345."""
    text = f"{value:.3f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def name_without_extension(name: str | os.PathLike) -> str:
    """File name without folders and image extension (``Movies/mic_1.mrc`` -> ``mic_1``)."""
    base = Path(str(name).replace("\\", "/")).name
    for ext in (".mrc.gz", ".mrc.bz2", ".mrcs", ".mrc", ".tiff", ".tif", ".png", ".jpg", ".jpeg"):
        if base.lower().endswith(ext):
            return base[: -len(ext)]
    return base
