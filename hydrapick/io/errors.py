"""The one exception type raised for unreadable or malformed input files."""

from __future__ import annotations

import os
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


def read_text_file(path: str | os.PathLike, not_text: str) -> str:
    """The UTF-8 text of ``path``, or a FormatError naming it.

    ``not_text`` completes the message for binary content, e.g. ``"is not a text file"``.
    """
    try:
        text = Path(path).read_bytes().decode("utf-8")
    except FileNotFoundError as exc:
        raise FormatError(f"{describe(path)} does not exist", path) from exc
    except UnicodeDecodeError as exc:
        raise FormatError(f"{describe(path)} {not_text}", path) from exc
    except OSError as exc:
        raise FormatError(f"{describe(path)} cannot be read: {exc.strerror}", path) from exc
    if "\x00" in text:
        raise FormatError(f"{describe(path)} {not_text}", path)
    return text
