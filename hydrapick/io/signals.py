"""Stopping cleanly when a batch system or a closed terminal ends the process (SIGTERM, SIGHUP).

SLURM's time limit and ``scancel`` send SIGTERM, and a terminal that closes sends SIGHUP. Python's default
for both is to die at once: the output lock (`hydrapick.io.lock`) would stay behind, refusing the next
run, and a RELION External job would end without an exit file, shown as running forever.
`stop_on_signals` turns them into `Terminated`, raised in the main thread, so every ``with`` block, the
lock's included, is left on the way out, and the caller says how it ended.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Terminated(BaseException):
    """A stop signal arrived. A BaseException, as KeyboardInterrupt is, so that no handler of errors (one
    bad micrograph among many) takes it for a failure and goes on."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_status(self) -> int:
        """The shell's status for a process ended by this signal (143 for SIGTERM)."""
        return 128 + self.signum


def _raise(signum: int, frame) -> None:
    raise Terminated(signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Raise `Terminated` on SIGTERM or SIGHUP while the block runs; the earlier handlers come back after.

    Outside the main thread, where Python cannot set handlers, nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _raise) for s in STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
