"""What a watch looks at: the micrographs in a folder or matching a glob, or those of a list that grows.

`Arrivals` lists them at each poll with their size, modification and status change times (hidden
``.name.mrc`` files, which copy tools rename when complete, are left out by
`hydrapick.io.inputs.micrograph_files`); a RELION micrographs STAR file or a text list is read again at
each poll (a partly rewritten one leaves the last listing standing), its optics groups' pixel sizes kept.
`check_watchable` refuses a single file.
"""

from __future__ import annotations

import logging
import os

from ..io import FormatError
from ..io.inputs import (
    InputError,
    MicrographInput,
    gather_inputs,
    is_glob,
    is_micrograph,
    is_micrograph_list,
    micrograph_files,
)

log = logging.getLogger(__name__)

FileStat = tuple[int, int, int]  # size, mtime_ns, ctime_ns


def check_watchable(spec: str | os.PathLike) -> None:
    """Raise `InputError` when ``spec`` names one file rather than a folder, glob or micrographs list.

    A folder or glob may match nothing yet, and a list may not exist yet: they are followed as they come.
    """
    text = os.fspath(spec)
    if os.path.isdir(text) or (is_glob(text) and not os.path.exists(text)) or is_micrograph_list(text):
        return
    if os.path.exists(text) or is_micrograph(text):
        raise InputError(f"--watch follows a folder, a quoted glob ('Movies/*.mrc') or a micrographs list "
                         f"(STAR or text); '{text}' is a single file: pick it without --watch")


class Arrivals:
    """The micrographs ``spec`` names at each poll: a folder's or a glob's, or a list's as it grows."""

    def __init__(self, spec: str | os.PathLike) -> None:
        self.text = os.fspath(spec)
        self.is_list = (not os.path.isdir(self.text) and not is_glob(self.text)
                        and is_micrograph_list(self.text))
        self.listed: list[MicrographInput] = []
        self.missing: list[MicrographInput] = []  # listed, but not on disk at the last poll

    def poll(self) -> dict[str, tuple[MicrographInput, FileStat]]:
        """``{path: (input, (size, mtime_ns, ctime_ns))}`` of the micrographs there now."""
        if self.is_list:
            if os.path.exists(self.text):
                try:
                    self.listed = gather_inputs([self.text])
                except (InputError, FormatError, OSError) as exc:
                    # Being rewritten, most likely: the last listing stands until the next poll.
                    log.debug("list '%s' not read this time: %s", self.text, exc)
            items = self.listed
        else:
            try:
                items = gather_inputs(micrograph_files(self.text))
            except InputError:  # nothing there yet
                items = []
        out: dict[str, tuple[MicrographInput, FileStat]] = {}
        self.missing = []
        for item in items:
            try:
                st = os.stat(item.path)
            except OSError:  # not there yet (a list), or removed between the listing and the stat
                if self.is_list:
                    self.missing.append(item)
                continue
            out[item.path] = (item, (st.st_size, st.st_mtime_ns, st.st_ctime_ns))
        return out
