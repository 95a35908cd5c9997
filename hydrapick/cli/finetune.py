"""``hydrapick finetune``: a new head for a new specimen from a few labelled micrographs."""

from __future__ import annotations

import click

from .group import cli
from .options import device_option, quiet_option, threads_option
from .training_display import TrainDisplay, invocation


@cli.command()
@click.argument("micrograph_args", metavar="[MICROGRAPHS]...", nargs=-1)
@click.option("--micrographs", "micrograph_opts", multiple=True,
              help="Training micrographs: a file, a quoted glob, a folder or a list (.star/.txt); "
                   "repeatable. Micrographs may also be given as arguments.")
@click.option("--coordinates", multiple=True, required=True,
              help="Their particle coordinates: a file, a folder or a quoted glob, in any format hydrapick "
                   "reads (matched to micrographs by name); repeatable.")
@click.option("--name", required=True, help="Name of the new head; pick with `hydrapick pick --head NAME`.")
@click.option("--diameter", "diameter_A", type=float, required=True, help="Particle diameter in Angstrom.")
@click.option("--model", "model_path", type=click.Path(exists=True, dir_okay=False),
              help="Base checkpoint (default: the bundled generic model).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint to write: the base model plus the new head.")
@click.option("--apix", "pixel_size_A", type=float,
              help="Pixel size in Angstrom (default: MRC header; TIFF, PNG and JPEG need it).")
@click.option("--coordinate-format", type=click.Choice(["star", "relion", "box", "cbox", "topaz", "cs"]),
              help="Coordinate format (default: from the file extension).")
@click.option("--flip-y", is_flag=True, help="Mirror y of the coordinates (y -> height - 1 - y).")
@click.option("--valid-micrographs", multiple=True,
              help="Held-out labelled micrographs to calibrate the threshold on (default: cross-validation "
                   "over the training micrographs); repeatable.")
@click.option("--valid-coordinates", multiple=True, help="Coordinates of the held-out micrographs.")
@click.option("--steps", type=int, help="Optimiser steps (default from FinetuneConfig).")
@click.option("--crop", "crop_px", type=int, help="Crop side in model pixels.")
@click.option("--lr", type=float, help="Learning rate (Adam).")
@click.option("--flips", is_flag=True, help="Also train on mirrored and rotated copies (8x feature cost).")
@click.option("--sparse", is_flag=True,
              help="Only some particles of each micrograph are labelled (clicks): the others are unknown, "
                   "not background (positive-unlabelled training; docs/training.md).")
@click.option("--expected-particles", type=float,
              help="Particles per micrograph, labelled or not (implies --sparse; default: estimated from "
                   "the generic head's confident picks and the share of the labels they find).")
@click.option("--train-body-blocks", type=int,
              help="Train the new head's own copy of the body's last N residual blocks with it, pulled "
                   "towards their starting weights (L2-SP); other heads are unchanged (default 1; 0: the "
                   "head alone; docs/training.md).")
@click.option("--body-lr-scale", type=float,
              help="Learning rate of those body blocks as a multiple of --lr (default 1).")
@click.option("--seed", type=int, help="Seed of every random choice (default 0).")
@click.option("--calibration", type=click.Choice(["f1", "precision"]),
              help="Threshold rule: the best F1 on the calibration data (default), or the thesis rule "
                   "(lowest score with precision >= 0.8; fewer, purer picks).")
@device_option
@threads_option
@quiet_option()
def finetune(micrograph_args: tuple[str, ...], micrograph_opts: tuple[str, ...], coordinates: tuple[str, ...],
             name: str, diameter_A: float, model_path: str | None, output: str, pixel_size_A: float | None,
             coordinate_format: str | None, flip_y: bool, valid_micrographs: tuple[str, ...],
             valid_coordinates: tuple[str, ...], steps: int | None, crop_px: int | None, lr: float | None,
             flips: bool, sparse: bool, expected_particles: float | None, train_body_blocks: int | None,
             body_lr_scale: float | None, seed: int | None, calibration: str | None, device: str,
             threads: int | None, quiet: bool) -> None:
    """Adapt the generic model to a new specimen from a few labelled micrographs (a new head).

    A new head, initialised from the generic head, is trained on the body features of the labelled
    micrographs (computed once; body and generic head stay frozen; the head also trains its own copy of
    the body's last --train-body-blocks blocks), and its score threshold is calibrated. The
    output checkpoint picks with `hydrapick pick --model OUTPUT --head NAME`.
    """
    from rich.console import Console

    from ..checkpoint import CheckpointError
    from ..config import FinetuneConfig, from_dict
    from ..training import FinetuneError, ManifestError
    from ..training import finetune as run_finetune

    micrographs = list(micrograph_opts) + list(micrograph_args)
    if not micrographs:
        raise click.UsageError("give the training micrographs (arguments or --micrographs)")
    given = dict(steps=steps, crop_px=crop_px, lr=lr, seed=seed, calibration=calibration,
                 expected_particles=expected_particles, train_body_blocks=train_body_blocks,
                 body_lr_scale=body_lr_scale)
    overrides = {k: v for k, v in given.items() if v is not None}
    if flips:
        overrides["flips"] = True
    if sparse:
        overrides["sparse"] = True
    try:
        config = from_dict(FinetuneConfig, overrides, where="finetune options")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    console = Console(stderr=True, quiet=quiet)
    try:
        with TrainDisplay(console) as display:
            result = run_finetune(model_path, name, micrographs, list(coordinates), diameter_A,
                                  pixel_size_A=pixel_size_A, coordinate_format=coordinate_format,
                                  flip_y=flip_y, valid_micrographs=list(valid_micrographs),
                                  valid_coordinates=list(valid_coordinates), config=config, device=device,
                                  threads=threads, output=output, progress=display,
                                  command=invocation())
    except (ManifestError, FinetuneError, CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    r = result.report
    lines = [f"head '{name}' written to {result.path}",
             f"threshold {result.threshold:.3f} ({r.get('source', '?')}"
             + (f", {r['rule']} rule)" if r.get("rule") else ")")]
    where = "held-out" if r.get("n_valid") else "cross-validated"
    if (r.get("sparse") or {}).get("sparse") and r.get("recall") is not None:
        lines.append(f"sparse labels ({r['sparse']['expected_particles']:.0f} particles per micrograph "
                     f"expected): recall {r['recall']:.3f} of the labelled particles on {where} "
                     f"micrographs, estimated precision {r['precision']:.3f}")
    elif r.get("ap") is not None:
        generic = r.get("generic_ap")
        lines.append(f"AP {r['ap']:.3f} on {where} micrographs"
                     + (f" (generic head: {generic:.3f})" if generic is not None else ""))
    click.echo("\n".join(lines))
