"""A small STAR reader and writer for the tables RELION and crYOLO write.

Only what coordinate and micrograph files use: ``data_`` blocks holding either one ``loop_`` table or
``_key value`` pairs, ``#`` comments (RELION's ``# version 30001`` line), quoted values. Values stay
strings; callers convert the columns they need, so a bad value is reported with its file and column.
"""

from __future__ import annotations

import math
import os
import re
import shlex
from pathlib import Path

from .atomic import write_text
from .errors import FormatError, describe, read_text_file


class Table(dict):
    """Columns of one data block: ``{"_rlnCoordinateX": ["1.0", ...], ...}`` in file order.

    ``loop`` is False for a block of ``_key value`` pairs (each column then holds one value).
    """

    def __init__(self, loop: bool = True) -> None:
        super().__init__()
        self.loop = loop

    @property
    def n_rows(self) -> int:
        return len(next(iter(self.values()))) if self else 0


def read(path: str | os.PathLike) -> dict[str, Table]:
    """Parse a STAR file into ``{block_name: Table}`` (block name without ``data_``)."""
    path = Path(path)
    return parse(read_text_file(path, "is not a STAR file: it is not text"), path)


def parse(text: str, path: str | os.PathLike = "<string>") -> dict[str, Table]:
    blocks: dict[str, Table] = {}
    table: Table | None = None
    state = "outside"  # outside | pairs | loop_header | loop_body
    columns: list[str] = []
    pending: list[str] = []
    pending_line = 0
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("data_"):
            _finish_row(pending, columns, path, pending_line)
            pending = []
            name = line[5:].split()[0] if len(line) > 5 else ""
            table = Table(loop=False)
            blocks[name] = table
            state = "pairs"
            continue
        if table is None:
            raise FormatError(f"{describe(path)} is not a STAR file: line {lineno} comes before any "
                              f"data_ block (found {_clip(line)!r})", path)
        if line.startswith("loop_"):
            _finish_row(pending, columns, path, pending_line)
            pending = []
            if table.loop and table:
                raise FormatError(f"{describe(path)} has two loop_ tables in one data block "
                                  f"(line {lineno})", path)
            table.clear()
            table.loop = True
            columns = []
            state = "loop_header"
            continue
        if line.startswith("stop_"):
            continue
        tokens = _tokens(line, path, lineno)
        if state == "loop_header" and tokens[0].startswith("_"):
            # RELION writes "_rlnCoordinateX #1"; the "#n" is a comment.
            columns.append(tokens[0])
            table[tokens[0]] = []
            continue
        if state in ("loop_header", "loop_body"):
            if not columns:
                raise FormatError(f"{describe(path)} has a loop_ without column names (line {lineno})", path)
            state = "loop_body"
            if tokens[0].startswith("_"):
                raise FormatError(f"{describe(path)} has a column name {tokens[0]!r} after data rows "
                                  f"(line {lineno})", path)
            if not pending:
                pending_line = lineno
            pending.extend(tokens)
            while len(pending) >= len(columns):
                row, pending = pending[: len(columns)], pending[len(columns):]
                for col, value in zip(columns, row, strict=True):
                    table[col].append(value)
            continue
        # a "_key value" pair
        if not tokens[0].startswith("_") or len(tokens) != 2:
            raise FormatError(f"{describe(path)} is not a valid STAR file: expected '_name value' or "
                              f"loop_ at line {lineno}, found {_clip(line)!r}", path)
        table[tokens[0]] = [tokens[1]]
    _finish_row(pending, columns, path, pending_line)
    if not blocks:
        raise FormatError(f"{describe(path)} is not a STAR file: no data_ block found", path)
    return blocks


def _finish_row(pending: list[str], columns: list[str], path, lineno: int) -> None:
    if pending:
        raise FormatError(f"{describe(path)} has a row with {len(pending)} values where {len(columns)} "
                          f"columns were declared (line {lineno})", path)


_COMMENT = re.compile(r"(^|\s)#.*$")


def _tokens(line: str, path, lineno: int) -> list[str]:
    if "'" not in line and '"' not in line:
        # "#" starts a comment only at the start of a word, so "mic#1.mrc" stays a value.
        return _COMMENT.sub("", line).split()
    try:
        lexer = shlex.shlex(line, posix=True)
        lexer.whitespace_split = True
        lexer.commenters = "#"
        return list(lexer)
    except ValueError as exc:
        raise FormatError(f"{describe(path)} has an unbalanced quote at line {lineno}", path) from exc


def _clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."


def find_loop(blocks: dict[str, Table], column: str, path, expected: str) -> Table:
    """The first table holding ``column``; a FormatError naming what was found otherwise."""
    for table in blocks.values():
        if column in table:
            return table
    found = sorted({c for t in blocks.values() for c in t})
    raise FormatError(f"{describe(path)} has no {column} column ({expected} was expected); columns found: "
                      f"{', '.join(found) if found else 'none'}", path)


def to_float(value: str, path, column: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise FormatError(f"{describe(path)} has a non-numeric value {_clip(value)!r} in {column}",
                          path) from None


def floats(table: Table, column: str, path) -> list[float]:
    try:
        return [float(v) for v in table[column]]
    except ValueError:
        bad = next(v for v in table[column] if not _is_float(v))
        raise FormatError(f"{describe(path)} has a non-numeric value {_clip(bad)!r} in {column}",
                          path) from None


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def format_value(value) -> str:
    """RELION-like text for one value: floats with 6 decimals, ints as ints, strings quoted if needed."""
    if isinstance(value, str):
        needs_quotes = value == "" or re.search(r"\s", value) or value[0] in "_#'\""
        if needs_quotes or value.startswith(("data_", "loop_")):
            return '"' + value.replace('"', "'") + '"'
        return value
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    value = float(value)
    if math.isnan(value):
        return "nan"
    return f"{value:.6f}"


def render(blocks: list[tuple[str, dict[str, list]]], version: int | None = 30001) -> str:
    """STAR text for loop tables ``[(block_name, {column: values})]`` laid out like RELION writes them."""
    out: list[str] = []
    for name, columns in blocks:
        out.append("")
        if version is not None:
            out.append(f"# version {version}")
            out.append("")
        out.append(f"data_{name}")
        out.append("")
        out.append("loop_ ")
        for i, col in enumerate(columns, start=1):
            out.append(f"{col} #{i} ")
        cells = [[format_value(v) for v in values] for values in columns.values()]
        widths = [max([12] + [len(c) for c in col]) for col in cells]
        for row in zip(*cells, strict=True):
            out.append(" ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " ")
        out.append(" ")
    return "\n".join(out) + "\n"


def write(path: str | os.PathLike, blocks: list[tuple[str, dict[str, list]]],
          version: int | None = 30001) -> None:
    """Write loop tables atomically."""
    write_text(path, render(blocks, version))


_JOB_DIR = re.compile(r"^job\d+$")


def project_dirs(star_path: str | os.PathLike) -> list[Path]:
    """Folders against which relative paths in a RELION STAR file are resolved, most likely first.

    RELION stores paths relative to its project folder, which is two levels above a job folder
    (``<project>/AutoPick/job006/autopick.star``); other lists use paths relative to themselves.
    """
    # abspath, not resolve: ".." must act on the path as written, as it does for RELION.
    folder = Path(os.path.abspath(star_path)).parent
    bases = []
    if _JOB_DIR.match(folder.name):
        bases.append(folder.parent.parent)
    else:
        # The per-micrograph files of a job sit in subfolders (AutoPick/job006/Movies/...).
        for parent in folder.parents:
            if _JOB_DIR.match(parent.name):
                bases.append(parent.parent.parent)
                break
    bases += [folder, Path.cwd()]
    # Keep order, drop duplicates; the first is used when a path exists under none of them.
    return list(dict.fromkeys(bases))
