"""The ``hydrapick`` click group and the console entry point; the commands register on it."""

from __future__ import annotations

import logging
import sys

import click

from ..io.signals import Terminated, stop_on_signals
from ..version import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hydrapick")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
def cli(verbose: int) -> None:
    """hydrapick: particle picking for single-particle cryo-EM.

    Pick with the bundled generic model (no training needed), fine-tune it on a few labelled
    micrographs, train new models, score any picker against ground truth, and simulate micrographs.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def main() -> None:
    try:
        # SIGTERM (a batch system's time limit, scancel) and SIGHUP end the run as Ctrl-C does: the output
        # lock is released, finished micrographs are kept, and the status is not 0.
        with stop_on_signals():
            cli(prog_name="hydrapick")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Terminated as stop:
        click.echo(f"hydrapick: stopped by {stop.name}; finished micrographs are kept (a folder output "
                   "continues with --skip-existing)", err=True)
        sys.exit(stop.exit_status)
