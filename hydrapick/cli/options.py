"""Options shared by several commands, declared once so they read and behave the same everywhere."""

from __future__ import annotations

from collections.abc import Callable

import click

device_option = click.option("--device", default="auto", show_default=True,
                             help="auto, cpu, cuda or cuda:N.")
threads_option = click.option("--threads", type=click.IntRange(min=1),
                              help="CPU threads for torch (default: OMP_NUM_THREADS if set, "
                                   "else every core).")


def quiet_option(help: str = "No progress display; errors and the summary only.") -> Callable:
    """``-q/--quiet``; each command says what it still prints."""
    return click.option("-q", "--quiet", is_flag=True, help=help)
