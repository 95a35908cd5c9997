"""Which micrographs to read: paths, globs, folders, RELION micrographs STAR files and text lists.

A facility hands hydrapick thousands of micrographs in whatever form its pipeline produced them. This
module is the one place that turns every such form into one ordered, de-duplicated list of
`MicrographInput` (`gather_inputs`); `micrograph_files` expands one glob or folder, `is_glob` and
`is_micrograph` (by `MICROGRAPH_SUFFIXES`: MRC files and TIFF, PNG or JPEG pictures) classify a name.
Picking cuts the list into SLURM shards (`hydrapick.picking.shards`).
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .errors import missing
from .images import IMAGE_SUFFIXES

log = logging.getLogger(__name__)

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".mrc.gz", ".mrc.bz2", *IMAGE_SUFFIXES)
MICROGRAPH_KINDS = "MRC, TIFF, PNG or JPEG"  # what MICROGRAPH_SUFFIXES name, for messages
LIST_SUFFIXES = (".star", ".txt", ".lst", ".list")
_GLOB_CHARS = set("*?[")


class InputError(ValueError):
    """An input specification that names no micrographs (one line naming the problem)."""


@dataclass(frozen=True)
class MicrographInput:
    """One micrograph to pick.

    Parameters
    ----------
    path : str
        File to read.
    name : str
        Name written to the outputs (``_rlnMicrographName``): a RELION STAR file's name exactly as
        written there; otherwise the path as the user or the list gave it, made relative to the working
        folder when it lies inside it.
    pixel_size_A : float or None
        Pixel size given by the list (RELION optics group); None to use the MRC header.
    """

    path: str
    name: str
    pixel_size_A: float | None = None


def gather_inputs(specs: Iterable[str | os.PathLike | MicrographInput], *, pixel_size_A: float | None = None,
                  ) -> list[MicrographInput]:
    """Expand micrograph specifications into an ordered list without duplicates.

    Parameters
    ----------
    specs : iterable of str, path or MicrographInput
        Each one is a micrograph file (MRC, TIFF, PNG, JPEG), a glob (``Movies/*.mrc``, ``**``
        recurses), a folder (its micrograph files), a RELION micrographs STAR file
        (``_rlnMicrographName``; the optics block's pixel size is used), or a text list
        (``.txt``/``.lst``: one path per line, ``#`` comments); a `MicrographInput` is taken as it is.
    pixel_size_A : float, optional
        Overrides every pixel size (lists' and headers'); stored on each input.

    Returns
    -------
    list of MicrographInput
        In the order given; glob and folder matches sorted by name. A file named twice appears once.

    Raises
    ------
    InputError
        A glob or folder that matches no micrograph, a path that does not exist and is not named as a
        micrograph (``*.mrc``...), or no specs at all. A missing ``*.mrc`` is listed: reading it fails
        with the reason, so a run reports it and goes on with the others.
    """
    out: list[MicrographInput] = []
    seen: set[str] = set()

    def add(path: str, name: str, size: float | None) -> None:
        key = os.path.normcase(os.path.abspath(path))
        if key in seen:
            return
        seen.add(key)
        out.append(MicrographInput(path=path, name=name,
                                   pixel_size_A=pixel_size_A if pixel_size_A is not None else size))

    count = 0
    for spec in specs:
        count += 1
        if isinstance(spec, MicrographInput):
            add(spec.path, spec.name, spec.pixel_size_A)
            continue
        text = os.fspath(spec)
        if not text.strip():
            raise InputError("an empty micrograph path was given")
        if (is_glob(text) and not os.path.exists(text)) or os.path.isdir(text):
            for m in micrograph_files(text):
                add(m, _display_name(m), None)
        elif is_micrograph_list(text):
            # A STAR file's names are RELION's keys (Extract matches them string for string): kept as
            # written. A text list's paths are relative to the list, so they are named as found.
            star = text.lower().endswith(".star")
            for path, written, size in _read_list(text):
                add(path, written if star else _display_name(path), size)
        elif os.path.exists(text) or is_micrograph(text):
            # A missing micrograph named on its own is one bad micrograph among many: the reader reports
            # it ("does not exist", "is a symlink loop") and the run picks the others.
            add(text, _display_name(text), None)
        else:
            raise InputError(f"micrograph '{text}' {missing(text)}")
    if count == 0:
        raise InputError("no micrographs given")
    return out


def micrograph_files(spec: str | os.PathLike) -> list[str]:
    """The micrographs (`MICROGRAPH_SUFFIXES`) matching a glob (``**`` recurses) or in a folder.

    Returns
    -------
    list of str
        Sorted by name.

    Raises
    ------
    InputError
        Nothing matches, or ``spec`` is neither a glob nor a folder.
    """
    text = os.fspath(spec)
    if is_glob(text) and not os.path.exists(text):
        matches = sorted(m for m in glob.glob(text, recursive=True) if is_micrograph(m))
        if not matches:
            raise InputError(f"no {MICROGRAPH_KINDS} micrographs match '{text}'")
    elif os.path.isdir(text):
        # Hidden files are left out, as the glob form leaves them out: rsync and many copy tools write
        # ``.name.mrc`` and rename it when complete.
        matches = sorted(str(p) for p in Path(text).iterdir()
                         if p.is_file() and is_micrograph(p.name) and not p.name.startswith("."))
        if not matches:
            raise InputError(f"folder '{text}' holds no {MICROGRAPH_KINDS} micrographs")
    else:
        raise InputError(f"'{text}' is neither a glob nor a folder of micrographs")
    return matches


def _read_list(path: str) -> list[tuple[str, str, float | None]]:
    from .mrc import micrograph_list_entries

    if not os.path.exists(path):
        raise InputError(f"micrograph list '{path}' does not exist")
    entries = micrograph_list_entries(path)
    if not entries:
        raise InputError(f"micrograph list '{path}' names no micrographs")
    return entries


def is_glob(text: str) -> bool:
    """Whether ``text`` holds glob wildcards (``*``, ``?``, ``[``)."""
    return any(c in _GLOB_CHARS for c in text)


def is_micrograph(name: str | os.PathLike) -> bool:
    """Whether a file name ends in one of `MICROGRAPH_SUFFIXES` (any case)."""
    return os.fspath(name).lower().endswith(MICROGRAPH_SUFFIXES)


def is_micrograph_list(text: str) -> bool:
    """Whether a file name is a list of micrographs (STAR or text; `LIST_SUFFIXES`), not a micrograph."""
    lower = os.fspath(text).lower()
    return lower.endswith(LIST_SUFFIXES) and not is_micrograph(lower)


def _display_name(path: str) -> str:
    """The path as RELION would write it: relative to the working folder when inside it."""
    norm = os.path.normpath(path)
    if not os.path.isabs(norm):
        return norm.replace(os.sep, "/")
    try:
        rel = os.path.relpath(norm)
    except ValueError:  # another drive on Windows
        return norm
    return norm if rel.startswith("..") else rel.replace(os.sep, "/")
