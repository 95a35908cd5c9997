"""Atomic file writes: write a temporary file beside the target, then rename it into place.

A crash or a full disk then leaves either the old file or the new one, never a truncated one, which
matters when thousands of output files are written and a half-written STAR file would be read later.
This is the one place hydrapick writes files atomically; every output (coordinates, micrographs,
checkpoints, reports, plots, logs) goes through `atomic_path`.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, fsync: bool = False) -> Iterator[Path]:
    """Yield a temporary path in the target's folder; rename it to ``path`` if the block succeeds.

    The parent folder is created when missing. The file gets the permissions of the user's umask (as
    ``open`` would give it), so outputs written by one facility user can be read by another.
    ``fsync=True`` flushes the file to disk before the rename (checkpoints and run state, where a power
    cut must not leave an empty file behind a valid name).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates files readable only by the owner; output files should get the usual umask.
        os.chmod(tmp, 0o666 & ~_umask())
        if fsync:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8, ``\\n`` line ends)."""
    with atomic_path(path, fsync=fsync) as tmp:
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN and infinities are refused: use None)."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=False) + "\n")


def save_torch(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically and flushed to disk (checkpoints, optimiser state)."""
    import torch  # io stays importable without torch for the readers

    with atomic_path(path, fsync=True) as tmp:
        with open(tmp, "wb") as f:
            torch.save(obj, f)
