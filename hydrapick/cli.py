"""The ``hydrapick`` command: option parsing and summaries only; the work is done by the library."""

from __future__ import annotations

import logging
import sys

import click

from . import __version__


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


# --- pick (issue: picking) ------------------------------------------------------------------------------
@cli.command()
def pick() -> None:
    """Pick particles in micrographs with the bundled generic model or a fine-tuned one."""
    raise click.ClickException("pick is not available in this build yet")


# --- train (issue: training) ----------------------------------------------------------------------------
@cli.command()
def train() -> None:
    """Train a multi-head model on datasets described in a TOML manifest."""
    raise click.ClickException("train is not available in this build yet")


# --- finetune (issue: training) -------------------------------------------------------------------------
@cli.command()
def finetune() -> None:
    """Adapt the generic model to a new specimen from a few labelled micrographs (a new head)."""
    raise click.ClickException("finetune is not available in this build yet")


# --- evaluate (issue: evaluation) -----------------------------------------------------------------------
@cli.command()
def evaluate() -> None:
    """Score picks from any picker against ground truth (AP, AUROC, F1, PR/ROC curves, overlays)."""
    raise click.ClickException("evaluate is not available in this build yet")


# --- simulate (issue: simulator) ------------------------------------------------------------------------
@cli.command()
def simulate() -> None:
    """Make labelled synthetic micrographs (MRC + RELION STAR + manifest)."""
    raise click.ClickException("simulate is not available in this build yet")


def main() -> None:
    try:
        cli(prog_name="hydrapick")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
