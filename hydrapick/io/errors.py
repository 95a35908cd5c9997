"""The one exception type raised for unreadable or malformed input files."""

from __future__ import annotations

import os


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
