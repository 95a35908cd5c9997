"""Which micrographs to pick: paths, globs, folders, RELION micrographs STAR files and text lists.

A facility hands hydrapick thousands of micrographs in whatever form its pipeline produced them, and
a SLURM array spreads them over many jobs. This module turns every such form into one ordered,
de-duplicated list of `MicrographInput` and cuts it into shards that together cover the list exactly
once, whichever job runs which shard.
"""

from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")

MICROGRAPH_SUFFIXES = (".mrc", ".mrcs", ".mrc.gz", ".mrc.bz2")
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
        Name written to the outputs (``_rlnMicrographName``): the path as the user or the list gave it,
        made relative to the working folder when it lies inside it, as RELION expects.
    pixel_size_A : float or None
        Pixel size given by the list (RELION optics group); None to use the MRC header.
    """

    path: str
    name: str
    pixel_size_A: float | None = None


def gather_inputs(specs: Iterable[str | os.PathLike], *, pixel_size_A: float | None = None,
                  ) -> list[MicrographInput]:
    """Expand micrograph specifications into an ordered list without duplicates.

    Parameters
    ----------
    specs : iterable of str or path
        Each one is an MRC file, a glob (``Movies/*.mrc``, ``**`` recurses), a folder (its MRC files),
        a RELION micrographs STAR file (``_rlnMicrographName``; the optics block's pixel size is used),
        or a text list (``.txt``/``.lst``: one path per line, ``#`` comments).
    pixel_size_A : float, optional
        Overrides every pixel size (lists' and headers'); stored on each input.

    Returns
    -------
    list of MicrographInput
        In the order given; glob and folder matches sorted by name. A file named twice appears once.

    Raises
    ------
    InputError
        A glob or folder that matches no micrograph, a path that does not exist, or no specs at all.
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
        text = os.fspath(spec)
        if not text.strip():
            raise InputError("an empty micrograph path was given")
        if _is_glob(text) and not os.path.exists(text):
            matches = sorted(m for m in glob.glob(text, recursive=True) if _is_micrograph(m))
            if not matches:
                raise InputError(f"no MRC micrographs match '{text}'")
            for m in matches:
                add(m, _display_name(m), None)
        elif os.path.isdir(text):
            matches = sorted(str(p) for p in Path(text).iterdir() if p.is_file() and _is_micrograph(p.name))
            if not matches:
                raise InputError(f"folder '{text}' holds no MRC micrographs (*.mrc)")
            for m in matches:
                add(m, _display_name(m), None)
        elif _is_list(text):
            for path, size in _read_list(text):
                add(path, _display_name(path), size)
        elif os.path.exists(text):
            add(text, _display_name(text), None)
        else:
            raise InputError(f"micrograph '{text}' does not exist")
    if count == 0:
        raise InputError("no micrographs given")
    return out


def _read_list(path: str) -> list[tuple[str, float | None]]:
    from .mrc import read_micrograph_list

    if not os.path.exists(path):
        raise InputError(f"micrograph list '{path}' does not exist")
    entries = read_micrograph_list(path)
    if not entries:
        raise InputError(f"micrograph list '{path}' names no micrographs")
    return entries


def _is_glob(text: str) -> bool:
    return any(c in _GLOB_CHARS for c in text)


def _is_micrograph(name: str | os.PathLike) -> bool:
    return os.fspath(name).lower().endswith(MICROGRAPH_SUFFIXES)


def _is_list(text: str) -> bool:
    lower = text.lower()
    return lower.endswith(LIST_SUFFIXES) and not _is_micrograph(lower)


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


# --- sharding --------------------------------------------------------------------------------------------

def parse_shard(text: str) -> tuple[int, int]:
    """Parse ``"K/N"`` (shard K of N, counted from 0) into ``(K, N)``.

    Raises
    ------
    InputError
        Not of the form K/N with 0 <= K < N.
    """
    parts = str(text).strip().split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        index, count = int(parts[0]), int(parts[1])
    except ValueError:
        raise InputError(f"shard '{text}' is not of the form K/N (e.g. 0/8)") from None
    _check_shard(index, count, f"shard '{text}'")
    return index, count


def shard_from_environment(environ: Mapping[str, str] | None = None) -> tuple[int, int] | None:
    """The shard of this SLURM array task, or None outside a job array.

    Uses ``SLURM_ARRAY_TASK_COUNT`` tasks and the task's position in the array,
    ``(SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN) / SLURM_ARRAY_TASK_STEP``, so ``--array=1-10`` and
    ``--array=0-9`` both give shards 0..9.
    """
    env = os.environ if environ is None else environ
    if "SLURM_ARRAY_TASK_ID" not in env or "SLURM_ARRAY_TASK_COUNT" not in env:
        return None
    try:
        task = int(env["SLURM_ARRAY_TASK_ID"])
        count = int(env["SLURM_ARRAY_TASK_COUNT"])
        first = int(env.get("SLURM_ARRAY_TASK_MIN", "0"))
        step = int(env.get("SLURM_ARRAY_TASK_STEP", "1")) or 1
    except ValueError:
        raise InputError("SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT are not integers") from None
    if (task - first) % step:
        raise InputError(f"SLURM_ARRAY_TASK_ID {task} is not on the array's grid "
                         f"(min {first}, step {step})")
    index = (task - first) // step
    _check_shard(index, count, f"SLURM array task {task} (shard {index} of {count})")
    return index, count


def _check_shard(index: int, count: int, what: str) -> None:
    if count < 1:
        raise InputError(f"{what}: the number of shards must be at least 1")
    if not 0 <= index < count:
        raise InputError(f"{what}: the shard index must be between 0 and {count - 1}")


def select_shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """Every ``count``-th item starting at ``index``: shards 0..count-1 cover ``items`` exactly once.

    Interleaving (rather than cutting into blocks) keeps the shards' sizes within one of each other
    and spreads micrographs from the start and the end of a session over all jobs.
    """
    _check_shard(index, count, f"shard {index}/{count}")
    return list(items[index::count])
