"""The one exception type raised for unreadable or malformed input files."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path


class FormatError(ValueError):
    """A file that cannot be read as the expected format.

    The message is a single line naming the file, what was expected and what was found, so the
    command line can print it as is.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None) -> None:
        message = " ".join(str(message).split())
        super().__init__(message)
        self.path = None if path is None else str(path)


def describe(path: str | os.PathLike) -> str:
    """``File 'x'`` for messages."""
    return f"File '{os.fspath(path)}'"


class OutputError(ValueError):
    """An output location that cannot be written, or is in use by another run (one line naming it)."""


def missing(path: str | os.PathLike) -> str:
    """Why ``path`` cannot be opened although it was named: ``"does not exist"``, ``"is a symlink loop"``
    or ``"is a broken symlink (to 'target')"``, for messages that begin with `describe`."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (a symbolic link that points back to itself)"
        if os.path.islink(path):
            return f"is a broken symlink (to '{os.readlink(path)}')"
        if exc.errno == errno.ENOTDIR:
            return "does not exist (a folder on its path is a file)"
        if exc.errno == errno.EACCES:
            return "cannot be reached (permission denied on a folder above it)"
    return "does not exist"


def check_file(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path when it is a regular file, else a FormatError naming the problem.

    A FIFO, socket or device is refused rather than opened: reading a FIFO would wait forever.
    ``what`` names what was expected, e.g. ``"a coordinate file"``.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError:
        raise FormatError(f"{describe(path)} {missing(path)}", path) from None
    if stat.S_ISDIR(mode):
        raise FormatError(f"{describe(path)} is a folder; {what} was expected", path)
    if not stat.S_ISREG(mode):
        kind = ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
                else "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "not a regular file")
        raise FormatError(f"{describe(path)} is {kind}, not a regular file; {what} was expected", path)
    return path


def read_text_file(path: str | os.PathLike, not_text: str) -> str:
    """The UTF-8 text of ``path``, or a FormatError naming it.

    ``not_text`` completes the message for binary content, e.g. ``"is not a text file"``.
    """
    check_file(path, "a text file")
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{describe(path)} {not_text}", path) from exc
    except OSError as exc:
        raise FormatError(f"{describe(path)} cannot be read: {exc.strerror}", path) from exc
    if "\x00" in text:
        raise FormatError(f"{describe(path)} {not_text}", path)
    return text
