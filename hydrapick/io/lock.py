"""A lock file that keeps two runs from writing the same output at once.

Two ``hydrapick pick`` runs given the same ``-o`` would each write the combined files at the end, and one
run's picks would silently replace the other's. `output_lock` creates ``<lock>`` exclusively
(``O_CREAT | O_EXCL``, atomic on local and NFSv3+ file systems) holding the owner's PID and host, and
removes it when the run ends. A second run finds the lock and stops at once with one line naming the lock
and its holder. A lock left by a process that has died on this host is taken over; one from another host
cannot be checked and is reported, so the user can remove it once that run is known to be gone.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError

# Locks held with ``shared_within``, by absolute path, and the thread holding each: taking one again in that
# thread is a block nested in the same run, not a second run.
_HELD: dict[str, int] = {}


class OutputLockedError(OutputError):
    """The output is in use by another run (the message names the lock file and its holder)."""


@contextlib.contextmanager
def output_lock(lock: str | os.PathLike, what: str, *, shared_within: bool = False) -> Iterator[Path]:
    """Hold the lock file ``lock`` for the duration of the block.

    Parameters
    ----------
    lock : path
        The lock file; its folder is created when missing.
    what : str
        What the lock protects, for the message (e.g. ``"output 'picks.star'"``).
    shared_within : bool
        Blocks nested in this one, in the same thread, share the lock instead of being refused (a watch
        session holds its folder's lock throughout and picks into it batch by batch).

    Raises
    ------
    OutputLockedError
        Another live process holds the lock (or a process on another host does).
    """
    lock = Path(lock)
    key = os.path.abspath(lock)
    if _HELD.get(key) == threading.get_ident():
        # Held already by this thread (a watch session picking batch by batch): the outer block releases it.
        yield lock
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    me = f"{os.getpid()} {socket.gethostname()}\n"
    for attempt in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            pid, host = _holder(lock)
            if attempt == 0 and host == socket.gethostname() and pid is not None and not _alive(pid):
                # A run on this host that died without cleaning up: its lock is stale.
                lock.unlink(missing_ok=True)
                continue
            holder = f"PID {pid} on host {host}" if pid is not None else "an unknown process"
            raise OutputLockedError(
                f"{what} is in use by another hydrapick run ({holder}; lock file '{lock}'); wait for it to "
                "finish, choose another output, or remove the lock file if that run is no longer running"
            ) from None
        with os.fdopen(fd, "w") as f:
            f.write(me)
        break
    if shared_within:
        _HELD[key] = threading.get_ident()
    try:
        yield lock
    finally:
        if shared_within:
            _HELD.pop(key, None)
        with contextlib.suppress(OSError):
            if lock.read_text() == me:
                lock.unlink()


def _holder(lock: Path) -> tuple[int | None, str]:
    try:
        pid, host = lock.read_text().split()
        return int(pid), host
    except (OSError, ValueError):
        return None, "unknown"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True
