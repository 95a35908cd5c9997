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

from .errors import OutputError


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
    except OSError as exc:
        if exc.filename is None or str(exc.filename) == str(tmp):
            # "No space left on device" alone does not say which output failed: name the output.
            raise OSError(exc.errno, f"cannot write '{path}': {exc.strerror or exc}", str(path)) from exc
        raise
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


def check_writable(path: str | os.PathLike, what: str = "output", *, folder: bool = False) -> None:
    """Raise `OutputError` unless a file or folder can be written at ``path``, before any work starts.

    The nearest existing folder on the path must be a folder that accepts a new file (tested by creating
    and removing one, which also catches read-only mounts and ACLs); an existing ``path`` must be
    writable too. Missing folders below it are created later by `atomic_path`. ``folder=True``: ``path``
    is to be a folder (an existing file there is refused).
    """
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise OutputError(f"{what} '{path}' cannot be written: it is a file, and a folder is needed")
    if path.exists() and not path.is_dir() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} '{path}' cannot be written: the file exists and is read-only")
    folder = path if path.is_dir() else path.parent
    while not folder.exists() and folder != folder.parent:
        if folder.is_symlink():
            break
        folder = folder.parent
    if not folder.is_dir():
        raise OutputError(f"{what} '{path}' cannot be written: '{folder}' is not a folder")
    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".hydrapick-write-test-"):
            pass
    except OSError as exc:
        raise OutputError(f"{what} '{path}' cannot be written: folder '{folder}' does not accept new files "
                          f"({exc.strerror or exc})") from None
