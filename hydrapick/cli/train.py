"""``hydrapick train``: two-phase multi-head training from a TOML manifest (or only check the manifest)."""

from __future__ import annotations

import click

from .group import cli
from .options import device_option, quiet_option, threads_option
from .training_display import TrainDisplay, invocation


@cli.command()
@click.argument("manifest", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Run folder: checkpoints, log.jsonl and the final model.pt (required unless --check).")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file: a [train] table of TrainConfig keys and a [model] table of ModelConfig keys "
                   "(plus preset = 'thesis' or 'light'). Options given here override it.")
@click.option("--architecture", type=click.Choice(["thesis", "light"]),
              help="Network of a fresh model (default: thesis, or the config file's [model] preset).")
@click.option("--init", "init_path", type=click.Path(exists=True, dir_okay=False),
              help="Start from this checkpoint's body and generic head instead of random weights.")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --output from its checkpoint.")
@click.option("--pretrain-epochs", type=int, help="Epochs of phase 1 (single head, Adam).")
@click.option("--multihead-epochs", type=int, help="Epochs of phase 2 (one head per dataset, SGD).")
@click.option("--steps-per-epoch", type=int, help="Optimiser steps per epoch.")
@click.option("--batch-size", type=int, help="Crops per mini-batch (all from one dataset).")
@click.option("--crop", "crop_px", type=int, help="Crop side in model pixels.")
@click.option("--seed", type=int, help="Seed of every random choice (default 0).")
@click.option("--loader-workers", type=click.IntRange(min=0),
              help="Processes that make training batches ahead of the network (default 0: the main "
                   "process). A GPU needs several; the result does not depend on them.")
@device_option
@threads_option
@click.option("--check", is_flag=True, help="Only check the manifest and list its datasets; train nothing.")
@quiet_option()
def train(manifest: str, out_dir: str | None, config_path: str | None, architecture: str | None,
          init_path: str | None, resume: bool, pretrain_epochs: int | None, multihead_epochs: int | None,
          steps_per_epoch: int | None, batch_size: int | None, crop_px: int | None, seed: int | None,
          loader_workers: int | None, device: str, threads: int | None, check: bool, quiet: bool) -> None:
    """Train a multi-head model on datasets described in a TOML manifest.

    Phase 1 pretrains the body with the generic head on every dataset; phase 2 trains one head per
    dataset plus the generic head tied to them by the bias loss. The best epochs (validation loss) are
    kept, thresholds are calibrated on validation data, and OUTPUT/model.pt is ready for
    `hydrapick pick --model`. Multi-GPU: launch with torchrun (docs/training.md).
    """
    from rich.console import Console

    from ..checkpoint import CheckpointError
    from ..training import ManifestError, TrainingError
    from ..training import train as run_training
    from ..training.datasets import inspect_manifest
    from ..training.distributed import is_main_process

    # Under torchrun only rank 0 shows progress, calibrates and reports.
    console = Console(stderr=True, quiet=quiet or not is_main_process())
    if check:
        try:
            rows = inspect_manifest(manifest)
        except ManifestError as exc:
            raise click.ClickException(str(exc)) from None
        _train_print_datasets(rows)
        return
    if out_dir is None:
        raise click.UsageError("--output is required (the run folder)")
    overrides = {k: v for k, v in dict(pretrain_epochs=pretrain_epochs, multihead_epochs=multihead_epochs,
                                       steps_per_epoch=steps_per_epoch, batch_size=batch_size,
                                       crop_px=crop_px, seed=seed, loader_workers=loader_workers,
                                       ).items() if v is not None}
    display = TrainDisplay(console)
    try:
        with display:
            result = run_training(manifest, out_dir, config_file=config_path, architecture=architecture,
                                  overrides=overrides, init=init_path, resume=resume, device=device,
                                  threads=threads, progress=display, command=invocation())
    except (ManifestError, TrainingError, CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    if is_main_process():
        _train_print_result(result.metadata, result.path)


def _train_print_datasets(rows) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="datasets")
    for col in ("name", "kind", "train", "valid", "test", "particles", "diameter (Å)", "pixel size (Å)"):
        table.add_column(col)
    for r in rows:
        px = r["pixel_size_A"]
        table.add_row(r["name"], r["kind"], str(r["n_train"]), str(r["n_valid"]), str(r["n_test"]),
                      "-" if r["particles"] is None else str(r["particles"]),
                      "-" if r["diameter_A"] is None else f"{r['diameter_A']:g}",
                      "-" if px is None else (f"{px[0]:g}" if px[0] == px[1] else f"{px[0]:g}-{px[1]:g}"))
    Console().print(table)


def _train_print_result(metadata: dict, path) -> None:
    from rich.console import Console
    from rich.table import Table

    calibration = metadata.get("training", {}).get("calibration", {})
    table = Table(title=f"model written to {path}")
    for col in ("head", "threshold", "valid AP", "precision", "recall", "diameter (Å)"):
        table.add_column(col)
    for head, threshold in metadata.get("thresholds", {}).items():
        c = calibration.get(head, {})
        d = metadata.get("diameters_A", {}).get(head)

        def fmt(v):
            return "-" if v is None else f"{v:.3f}"
        table.add_row(head, fmt(threshold), fmt(c.get("ap")), fmt(c.get("precision")), fmt(c.get("recall")),
                      "-" if d is None else f"{d:g}")
    Console().print(table)
