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
from .config import PickConfig as _PickConfig  # noqa: E402 - defaults of the pick options

PICK_EXIT_FAILED = 3  # exit status when some micrographs could not be picked (the others were)
_PICK_SHOWN_FAILURES = 20


@cli.command()
@click.argument("micrographs", nargs=-1, required=True)
@click.option("-o", "--output", required=True, type=click.Path(),
              help="x.star (one STAR file, _rlnMicrographName; default format), x.txt (Topaz), x.cs "
                   "(cryoSPARC), or a folder: a RELION job folder (AutoPick/job010) or .box files.")
@click.option("-f", "--format", "fmt", type=click.Choice(["star", "relion", "box", "topaz", "cs"]),
              help="Output format (default: from the --output name; a name without extension is a RELION "
                   "job folder).")
@click.option("--model", "model_path", type=click.Path(dir_okay=False),
              help="Checkpoint to pick with (default: the bundled generic model).")
@click.option("--head", default=_PickConfig.head, show_default=True,
              help="Head of the model: 'generic' for a new specimen, else a fine-tuned head's name.")
@click.option("--diameter", "diameter_A", type=float,
              help="Particle diameter in Angstrom (required unless the head records one).")
@click.option("--apix", "pixel_size_A", type=float,
              help="Pixel size in Angstrom for every micrograph (default: from the STAR list or MRC header).")
@click.option("--threshold", type=float,
              help="Score cut for the main output (default: the calibrated threshold stored with the head).")
@click.option("--min-distance", "min_distance_A", type=float,
              help="Minimum distance between picks in Angstrom (default: 0.8 x diameter).")
@click.option("--border", "border_A", type=float,
              help="Drop picks whose centre is closer than this to the micrograph edge, in Angstrom "
                   "(default: half the diameter, so every pick lies wholly inside; 0 keeps all).")
@click.option("--score-floor", type=float, default=_PickConfig.score_floor, show_default=True,
              help="Candidates above this score go to the candidates output, for re-thresholding later.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-size", type=int, default=_PickConfig.batch_size, show_default=True,
              help="Micrographs per forward pass (those of equal size are batched).")
@click.option("--threads", "num_threads", type=click.IntRange(min=1),
              help="CPU threads for the network (default: OMP_NUM_THREADS if set, else every core).")
@click.option("--full-precision", is_flag=True,
              help="Compute in float32 (default: bfloat16/float16 autocast on GPUs and on CPUs with "
                   "hardware bfloat16; scores then differ by about 0.01).")
@click.option("--shard", help="K/N: pick every N-th micrograph starting at K (0-based). Default in a SLURM "
                              "job array: SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT.")
@click.option("--skip-existing", is_flag=True,
              help="Folder outputs: do not pick micrographs whose output files exist (continue a run).")
@click.option("--preview", "preview_dir", type=click.Path(file_okay=False),
              help="Write PNG overlays of the first few micrographs with their picks to this folder.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary; errors only.")
def pick(micrographs: tuple[str, ...], output: str, fmt: str | None, model_path: str | None, head: str,
         diameter_A: float | None, pixel_size_A: float | None, threshold: float | None,
         min_distance_A: float | None, border_A: float | None, score_floor: float, device: str,
         batch_size: int, num_threads: int | None, full_precision: bool, shard: str | None,
         skip_existing: bool, preview_dir: str | None, quiet: bool) -> None:
    """Pick particles in micrographs with the bundled generic model or a fine-tuned one.

    MICROGRAPHS are MRC files, globs ('Movies/*.mrc'), folders, a RELION micrographs STAR file or a text
    list of paths. Coordinates are written in pixels of the micrographs as read. A micrograph that cannot
    be read is reported and skipped; the exit status is then 3.

    \b
    Examples:
      hydrapick pick 'Movies/*.mrc' --diameter 300 -o picks.star
      hydrapick pick CtfFind/job003/micrographs_ctf.star --diameter 180 -o AutoPick/job010
    """
    from rich.console import Console

    from .checkpoint import CheckpointError
    from .inputs import InputError, parse_shard, shard_from_environment
    from .io import FormatError
    from .picking import pick as run_pick

    err = Console(stderr=True, quiet=quiet)
    try:
        shard_spec = parse_shard(shard) if shard else shard_from_environment()
        if shard_spec is not None and not shard:
            err.print(f"SLURM array task: shard {shard_spec[0]}/{shard_spec[1]}")
        with _pick_progress(err, quiet) as progress:
            report = run_pick(list(micrographs), output, format=fmt, model=model_path, head=head,
                              diameter_A=diameter_A, pixel_size_A=pixel_size_A, threshold=threshold,
                              min_distance_A=min_distance_A, border_A=border_A, score_floor=score_floor,
                              device=device, batch_size=batch_size, num_threads=num_threads,
                              mixed_precision=not full_precision, shard=shard_spec,
                              skip_existing=skip_existing, preview_dir=preview_dir, progress=progress)
    except (InputError, FormatError, CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    if not quiet:
        _pick_summary(report, Console())
    for _, reason in report.failures[:_PICK_SHOWN_FAILURES]:
        click.echo(f"failed: {reason}", err=True)
    if report.n_failed > _PICK_SHOWN_FAILURES:
        click.echo(f"... and {report.n_failed - _PICK_SHOWN_FAILURES} more failed micrographs", err=True)
    if report.shard and report.shard[1] > 1 and not quiet:
        click.echo(f"shard {report.shard[0]}/{report.shard[1]} done. When every shard has finished, run the "
                   "same command without --shard, with --skip-existing, to write the combined files "
                   "(folder outputs).", err=True)
    if report.n_failed:
        sys.exit(PICK_EXIT_FAILED)


def _pick_progress(console, quiet: bool):
    """Context manager yielding a progress callback for `hydrapick.picking.pick` (a rich bar)."""
    import contextlib

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    @contextlib.contextmanager
    def manager():
        if quiet:
            yield None
            return
        bar = Progress(TextColumn("picking"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]:.2f} micrographs/s"),
                       TextColumn("{task.fields[picks]} picks"), TextColumn("{task.fields[failed]}"),
                       TimeRemainingColumn(), console=console)
        state: dict = {}

        def update(event) -> None:
            if event.result is None:
                state["task"] = bar.add_task("pick", total=event.total, rate=0.0, picks=0, failed="")
                return
            task = bar.tasks[0]
            elapsed = task.elapsed or 0.0
            failed = f"[red]{event.failed} failed[/red]" if event.failed else ""
            bar.update(state["task"], completed=event.done, picks=event.picks, failed=failed,
                       rate=event.done / elapsed if elapsed > 0 else 0.0)

        with bar:
            yield update

    return manager()


def _pick_summary(report, console) -> None:
    from rich.table import Table

    table = Table(title="hydrapick pick", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    picked = report.n_picked
    n_picks = len(report.picks)
    table.add_row("micrographs", f"{report.n_micrographs}")
    table.add_row("picked", f"{picked}")
    if report.n_skipped:
        table.add_row("skipped (outputs exist)", f"{report.n_skipped}")
    table.add_row("failed", f"[red]{report.n_failed}[/red]" if report.n_failed else "0")
    table.add_row(f"picks (score >= {report.threshold:.3g})", f"{n_picks}")
    done = picked + report.n_skipped
    table.add_row("mean picks per micrograph", f"{n_picks / done:.1f}" if done else "-")
    table.add_row("candidates (all scores)", f"{len(report.candidates)}")
    table.add_row("time", f"{report.seconds:.1f} s ({report.micrographs_per_second:.2f} micrographs/s)")
    for path in report.outputs:
        table.add_row("output", str(path))
    console.print(table)


# --- train (issue: training) ----------------------------------------------------------------------------
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
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("--check", is_flag=True, help="Only check the manifest and list its datasets; train nothing.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display; errors and the summary only.")
def train(manifest: str, out_dir: str | None, config_path: str | None, architecture: str | None,
          init_path: str | None, resume: bool, pretrain_epochs: int | None, multihead_epochs: int | None,
          steps_per_epoch: int | None, batch_size: int | None, crop_px: int | None, seed: int | None,
          device: str, threads: int | None, check: bool, quiet: bool) -> None:
    """Train a multi-head model on datasets described in a TOML manifest.

    Phase 1 pretrains the body with the generic head on every dataset; phase 2 trains one head per
    dataset plus the generic head tied to them by the bias loss. The best epochs (validation loss) are
    kept, thresholds are calibrated on validation data, and OUTPUT/model.pt is ready for
    `hydrapick pick --model`. Multi-GPU: launch with torchrun (docs/training.md).
    """
    import os

    from rich.console import Console

    from .data import inspect_manifest
    from .manifest import ManifestError

    console = Console(stderr=True, quiet=quiet or os.environ.get("RANK", "0") != "0")
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
                                       crop_px=crop_px, seed=seed).items() if v is not None}
    train_config, model_config = _train_configs(config_path, architecture, overrides)
    if threads:
        import torch

        torch.set_num_threads(threads)
    from .checkpoint import CheckpointError
    from .training import TrainingError
    from .training import train as run_training

    display = _TrainDisplay(console)
    try:
        with display:
            result = run_training(manifest, out_dir, config=train_config, model_config=model_config,
                                  init=init_path, resume=resume, device=device, progress=display,
                                  command=_invocation())
    except (ManifestError, TrainingError, CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    if os.environ.get("RANK", "0") == "0":  # under torchrun only rank 0 calibrates and reports
        _train_print_result(result.metadata, result.path)


def _train_configs(config_path, architecture, overrides):
    """TrainConfig and ModelConfig from an optional TOML file, the preset and command-line overrides."""
    from .config import ModelConfig, TrainConfig, from_dict, to_dict
    from .manifest import tomllib

    raw: dict = {}
    if config_path:
        try:
            with open(config_path, "rb") as f:
                raw = tomllib.load(f)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise click.ClickException(f"{config_path}: cannot read the config ({exc})") from None
        unknown = sorted(set(raw) - {"train", "model"})
        if unknown:
            raise click.ClickException(f"{config_path}: unknown table(s) {', '.join(unknown)}; "
                                       "expected [train] and [model]")
    model_raw = dict(raw.get("model", {}))
    preset = architecture or model_raw.pop("preset", "thesis")
    if preset not in ("thesis", "light"):
        raise click.ClickException(f"{config_path}: [model] preset must be 'thesis' or 'light'")
    try:
        train_config = from_dict(TrainConfig, {**raw.get("train", {}), **overrides},
                                 where=f"{config_path or 'options'} [train]")
        base = ModelConfig.light() if preset == "light" else ModelConfig.thesis()
        model_config = from_dict(ModelConfig, {**to_dict(base), **model_raw},
                                 where=f"{config_path or 'options'} [model]")
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None
    return train_config, model_config


def _invocation() -> str:
    """The current command with its effective options, for the provenance stored in checkpoints."""
    import shlex

    ctx = click.get_current_context()
    parts = ["hydrapick", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value is False or value == ():
            continue
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(param, click.Argument):
            parts += [shlex.quote(str(v)) for v in values]
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            parts.append(flag)
        else:
            for v in values:
                parts += [flag, shlex.quote(str(v))]
    return " ".join(parts)


class _TrainDisplay:
    """Rich progress for `hydrapick train` / `finetune`, fed by the library's TrainEvent callback."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(), console=console,
                                 disable=console.quiet)
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _task(self, key: str, description: str, total: int) -> int:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=total, info="")
        return self.tasks[key]

    def __call__(self, event) -> None:
        p = self.progress
        if event.kind in ("load", "features"):
            label = "caching micrographs" if event.kind == "load" else "computing features"
            task = self._task(event.kind, label, event.steps)
            p.update(task, completed=event.step, total=event.steps, info=event.message)
        elif event.kind == "phase":
            task = self._task("epochs", event.phase, event.epochs)
            p.update(task, description=event.phase, completed=event.epoch, total=event.epochs, info="")
        elif event.kind == "step":
            label = "steps" if event.epochs else event.phase
            task = self._task("steps", label, event.steps)
            p.update(task, description=label, completed=event.step, total=event.steps,
                     info=f"loss {event.values.get('loss', float('nan')):.4f}")
        elif event.kind == "epoch":
            record = event.values
            p.update(self._task("epochs", event.phase, event.epochs), completed=event.epoch)
            p.console.print(_train_epoch_line(record))
        elif event.kind in ("calibrate", "done") and event.message:
            p.console.print(event.message)


def _train_epoch_line(record: dict) -> str:
    valid = record.get("valid") or {}
    parts = [f"{record['phase']:<9} {record['epoch']:>4}/{record['epochs']}",
             f"loss {record['train']['loss']:.4f}"]
    if valid.get("loss") is not None:
        parts.append(f"valid {valid['loss']:.4f}")
    aps = [f"{h} {v['ap']:.3f}" for h, v in valid.get("heads", {}).items()
           if isinstance(v, dict) and v.get("ap") is not None]
    if aps:
        parts.append("AP " + ", ".join(aps[:6]) + (" ..." if len(aps) > 6 else ""))
    if record.get("best"):
        parts.append("[bold green]best[/]")
    return "  ".join(parts)


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


# --- finetune (issue: training) -------------------------------------------------------------------------
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
@click.option("--apix", "pixel_size_A", type=float, help="Pixel size in Angstrom (default: MRC header).")
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
@click.option("--seed", type=int, help="Seed of every random choice (default 0).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--threads", type=int, help="CPU threads for torch.")
@click.option("-q", "--quiet", is_flag=True, help="No progress display; errors and the summary only.")
def finetune(micrograph_args: tuple[str, ...], micrograph_opts: tuple[str, ...], coordinates: tuple[str, ...],
             name: str, diameter_A: float, model_path: str | None, output: str, pixel_size_A: float | None,
             coordinate_format: str | None, flip_y: bool, valid_micrographs: tuple[str, ...],
             valid_coordinates: tuple[str, ...], steps: int | None, crop_px: int | None, lr: float | None,
             flips: bool, seed: int | None, device: str, threads: int | None, quiet: bool) -> None:
    """Adapt the generic model to a new specimen from a few labelled micrographs (a new head).

    A new head, initialised from the generic head, is trained on the body features of the labelled
    micrographs (computed once; body and generic head stay frozen), and its score threshold is
    calibrated. The output checkpoint picks with `hydrapick pick --model OUTPUT --head NAME`.
    """
    from rich.console import Console

    from .checkpoint import CheckpointError
    from .config import FinetuneConfig, from_dict
    from .finetune import FinetuneError
    from .finetune import finetune as run_finetune
    from .manifest import ManifestError

    micrographs = list(micrograph_opts) + list(micrograph_args)
    if not micrographs:
        raise click.UsageError("give the training micrographs (arguments or --micrographs)")
    given = dict(steps=steps, crop_px=crop_px, lr=lr, seed=seed)
    overrides = {k: v for k, v in given.items() if v is not None}
    if flips:
        overrides["flips"] = True
    try:
        config = from_dict(FinetuneConfig, overrides, where="finetune options")
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if threads:
        import torch

        torch.set_num_threads(threads)
    console = Console(stderr=True, quiet=quiet)
    try:
        with _TrainDisplay(console) as display:
            result = run_finetune(model_path, name, micrographs, list(coordinates), diameter_A,
                                  pixel_size_A=pixel_size_A, coordinate_format=coordinate_format,
                                  flip_y=flip_y, valid_micrographs=list(valid_micrographs),
                                  valid_coordinates=list(valid_coordinates), config=config, device=device,
                                  output=output, progress=display,
                                  command=_invocation())
    except (ManifestError, FinetuneError, CheckpointError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    r = result.report
    lines = [f"head '{name}' written to {result.path}",
             f"threshold {result.threshold:.3f} ({r.get('source', '?')})"]
    if r.get("ap") is not None:
        generic = r.get("generic_ap")
        where = "held-out" if r.get("n_valid") else "cross-validated"
        lines.append(f"AP {r['ap']:.3f} on {where} micrographs"
                     + (f" (generic head: {generic:.3f})" if generic is not None else ""))
    click.echo("\n".join(lines))


# --- evaluate (issue: evaluation) -----------------------------------------------------------------------
@cli.command()
@click.option("--truth", "truth_path", required=True, type=click.Path(exists=True),
              help="True particle coordinates: a file or a folder of per-micrograph files (STAR, box, "
                   "cbox, Topaz txt, cryoSPARC cs). An empty per-micrograph file is a micrograph without "
                   "particles.")
@click.option("--picks", "picks_paths", required=True, multiple=True, type=click.Path(exists=True),
              help="Picks to score (file or folder, any supported format). Repeat to compare pickers.")
@click.option("--label", "labels", multiple=True,
              help="Name of each --picks in tables and figures, in the same order (default: file name).")
@click.option("--box", "box_px", type=float, help="Box side in micrograph pixels used for the IoU.")
@click.option("--diameter", "diameter_A", type=float,
              help="Particle diameter in Angstrom (box = diameter / apix).")
@click.option("--apix", "pixel_size_A", type=float,
              help="Pixel size in Angstrom for --diameter (default: from the --micrographs headers).")
@click.option("--iou", "iou_threshold", type=float, default=0.6, show_default=True,
              help="A pick is a true positive when IoU > this with an unmatched true box.")
@click.option("--threshold", "thresholds", type=float, multiple=True,
              help="Score threshold for precision/recall/F1: one for all pickers or one per --picks "
                   "(default: every pick in the file).")
@click.option("--flip-y-truth", is_flag=True, help="Mirror y of the truth (y -> height - 1 - y).")
@click.option("--flip-y-picks", is_flag=True, help="Mirror y of every --picks (y -> height - 1 - y).")
@click.option("--image-height", type=int, help="Micrograph height in pixels for --flip-y-* "
                                                "(default: from each micrograph in --micrographs).")
@click.option("--micrographs", "micrographs_path", type=click.Path(),
              help="Folder (or glob) of the MRC micrographs: heights for --flip-y-*, pixel size, overlays.")
@click.option("--include-unlabelled", is_flag=True,
              help="Also evaluate micrographs that have picks but no truth: their picks count as false "
                   "positives. By default only micrographs named by the truth are evaluated.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False),
              help="Write every metric (overall and per micrograph, with curves) to this JSON file.")
@click.option("--plots", "plots_dir", type=click.Path(file_okay=False),
              help="Write pr.png, roc.png and, with --micrographs, overlays of picks (red) and truth "
                   "(green).")
@click.option("--overlays", "n_overlays", type=int, default=3, show_default=True,
              help="Number of micrographs drawn with --plots (per picker).")
@click.option("--per-micrograph/--no-per-micrograph", default=None,
              help="Show the per-micrograph table (default: when at most 30 micrographs).")
def evaluate(truth_path: str, picks_paths: tuple[str, ...], labels: tuple[str, ...], box_px: float | None,
             diameter_A: float | None, pixel_size_A: float | None, iou_threshold: float,
             thresholds: tuple[float, ...], flip_y_truth: bool, flip_y_picks: bool, image_height: int | None,
             micrographs_path: str | None, include_unlabelled: bool, json_path: str | None,
             plots_dir: str | None, n_overlays: int, per_micrograph: bool | None) -> None:
    """Score picks from any picker against ground truth (AP, AUROC, F1, PR/ROC curves, overlays).

    Micrographs are matched by name across formats (mic_001.mrc, mic_001_autopick.star and mic_001
    are one micrograph). Metric definitions are in docs/evaluate.md.

    \b
    Example:
      hydrapick evaluate --truth truth/ --picks picks.star --picks topaz.txt --label hydrapick \\
          --label topaz --diameter 300 --apix 5.36 --json scores.json --plots figs --micrographs mics/
    """
    from pathlib import Path

    from . import evaluation
    from .io import FormatError

    picks_paths = tuple(Path(p) for p in picks_paths)
    if labels and len(labels) != len(picks_paths):
        raise click.ClickException(f"--label was given {len(labels)} times for {len(picks_paths)} --picks")
    if len(thresholds) > 1 and len(thresholds) != len(picks_paths):
        raise click.ClickException(f"--threshold was given {len(thresholds)} times for "
                                   f"{len(picks_paths)} --picks")
    if plots_dir is not None and n_overlays > 0 and micrographs_path is None:
        logging.getLogger(__name__).info("no --micrographs: --plots writes curves only")
    try:
        mic_files = evaluation.find_micrographs(micrographs_path) if micrographs_path is not None else {}
        box = _evaluate_box(box_px, diameter_A, pixel_size_A, mic_files)
        heights = _evaluate_heights(image_height, mic_files) if (flip_y_truth or flip_y_picks) else None
        truth = evaluation.load_coordinates(truth_path, flip_y=flip_y_truth, image_height=heights)
        if len(truth.picks) == 0:
            raise click.ClickException(f"{truth_path}: no true particles found")
        if isinstance(heights, dict):
            lacking = [m for m in truth.micrographs if m not in heights]
            if lacking:
                raise click.ClickException(f"micrograph {lacking[0]} of the truth has no image in "
                                           f"{micrographs_path}, so its y cannot be flipped")
        names = _evaluate_labels(picks_paths, labels)
        reports = {}
        pick_sets = {}
        for i, (name, path) in enumerate(zip(names, picks_paths, strict=True)):
            # Picks on micrographs without an image cannot be flipped; they are not evaluated anyway
            # unless --include-unlabelled, and then only micrographs with an image are.
            picked = evaluation.load_coordinates(path, flip_y=flip_y_picks, image_height=heights,
                                                 missing_height="drop")
            micrographs = truth.micrographs + (picked.micrographs if include_unlabelled else [])
            threshold = thresholds[i if len(thresholds) > 1 else 0] if thresholds else None
            reports[name] = evaluation.evaluate(truth.picks, picked.picks, box, iou_threshold=iou_threshold,
                                                threshold=threshold, micrographs=micrographs)
            pick_sets[name] = picked.picks
    except (FormatError, ValueError, FileNotFoundError) as exc:
        hint = " in --micrographs (or give --apix)" if str(exc).startswith("no box size") else ""
        raise click.ClickException(f"{exc}{hint}") from exc

    _evaluate_print(reports, box, per_micrograph)
    if json_path is not None:
        metadata = {"truth": str(truth_path),
                    "picks": {n: str(p) for n, p in zip(names, picks_paths, strict=True)},
                    "box_px": box, "iou_threshold": iou_threshold, "hydrapick_version": __version__}
        evaluation.write_report_json(json_path, reports, curves=True, metadata=metadata)
        click.echo(f"wrote {json_path}")
    if plots_dir is not None:
        written = _evaluate_plots(Path(plots_dir), reports, pick_sets, truth.picks, mic_files, box,
                                  thresholds, n_overlays)
        click.echo(f"wrote {len(written)} figures to {plots_dir}")


def _evaluate_box(box_px, diameter_A, pixel_size_A, mic_files) -> float | dict[str, float]:
    if box_px is not None:
        if diameter_A is not None:
            raise click.ClickException("give either --box or --diameter, not both")
        return box_px
    if diameter_A is None:
        raise click.ClickException("give the box size: --box PX, or --diameter A with --apix A")
    if diameter_A <= 0 or (pixel_size_A is not None and pixel_size_A <= 0):
        raise click.ClickException("--diameter and --apix must be positive")
    if pixel_size_A is not None:
        return diameter_A / pixel_size_A
    from .io import read_micrograph

    if not mic_files:
        raise click.ClickException("--diameter needs --apix (or --micrographs whose headers give the "
                                   "pixel size)")
    # Each micrograph's own pixel size: simulated or merged datasets need not share one.
    boxes = {}
    for key, path in mic_files.items():
        apix = read_micrograph(path).pixel_size_A
        if apix is None:
            raise click.ClickException(f"{path}: the header has no pixel size; give --apix")
        boxes[key] = diameter_A / apix
    return boxes


def _evaluate_heights(image_height, mic_files):
    if image_height is not None:
        return image_height
    if not mic_files:
        raise click.ClickException("--flip-y-truth/--flip-y-picks need --image-height or --micrographs")
    from .io import read_micrograph

    return {key: read_micrograph(path).shape[0] for key, path in mic_files.items()}


def _evaluate_labels(paths, labels) -> list[str]:
    names = list(labels) if labels else [p.stem if p.is_file() else p.name for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def _evaluate_print(reports, box, per_micrograph) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if not console.is_terminal:
        # Piped or captured output: keep whole numbers rather than fitting 80 columns.
        console = Console(width=200)

    def fmt(value, digits=3):
        return "-" if value is None or value != value or value in (float("inf"), float("-inf")) \
            else f"{value:.{digits}f}"

    first = next(iter(reports.values()))
    if isinstance(box, dict) and min(box.values()) != max(box.values()):
        box_text = f"box {min(box.values()):.1f}-{max(box.values()):.1f} px"
    elif isinstance(box, dict):
        box_text = f"box {min(box.values()):.1f} px"
    else:
        box_text = f"box {box:.1f} px"
    table = Table(title=f"Picks vs truth: {first.n_micrographs} micrographs, {box_text}, "
                        f"IoU > {first.iou_threshold:g}")
    for column in ("picker", "AP", "AUROC", "best F1", "at score", "P", "R", "F1", "R@P0.9",
                   "truth", "picks", "matched", "offset px"):
        table.add_column(column, justify="left" if column == "picker" else "right", no_wrap=True)
    for name, r in reports.items():
        table.add_row(name, fmt(r.ap), fmt(r.auroc), fmt(r.best_f1), fmt(r.best_f1_threshold, 4),
                      fmt(r.precision), fmt(r.recall), fmt(r.f1), fmt(r.recall_at_precision_0_9),
                      str(r.n_truth), str(r.n_picks), str(r.n_matched), fmt(r.mean_offset_px, 1))
    console.print(table)
    show = per_micrograph if per_micrograph is not None else first.n_micrographs <= 30
    if show:
        for name, r in reports.items():
            sub = Table(title=f"{name}: per micrograph")
            for column in ("micrograph", "AP", "best F1", "P", "R", "F1", "truth", "picks", "matched"):
                sub.add_column(column, justify="left" if column == "micrograph" else "right", no_wrap=True)
            for mic, m in r.per_micrograph.items():
                sub.add_row(mic, fmt(m.ap), fmt(m.best_f1), fmt(m.precision), fmt(m.recall), fmt(m.f1),
                            str(m.n_truth), str(m.n_picks), str(m.n_matched))
            console.print(sub)
    elif per_micrograph is None:
        console.print(f"({first.n_micrographs} micrographs: per-micrograph rows with --per-micrograph "
                      "or in --json)")
    for name, r in reports.items():
        if r.skipped_picks:
            examples = ", ".join(list(r.skipped_picks)[:3]) + (", ..." if len(r.skipped_picks) > 3 else "")
            console.print(f"[yellow]{name}: {sum(r.skipped_picks.values())} picks on {len(r.skipped_picks)} "
                          f"micrographs without truth were left out ({examples}); --include-unlabelled "
                          f"counts them as false positives[/yellow]")
        if r.skipped_truth:
            console.print(f"[yellow]{name}: {sum(r.skipped_truth.values())} true particles on micrographs "
                          f"outside the evaluation were left out[/yellow]")


def _evaluate_plots(plots_dir, reports, pick_sets, truth, mic_files, box, thresholds, n_overlays) -> list:
    from . import evaluation, plots
    from .io import read_micrograph

    written = [plots.pr_curves(reports, plots_dir / "pr.png"),
               plots.roc_curves(reports, plots_dir / "roc.png")]
    if not mic_files or n_overlays <= 0:
        return written
    first = next(iter(reports.values()))
    # Prefer micrographs with both particles and picks: an empty overlay shows nothing.
    candidates = [m for m in first.per_micrograph if m in mic_files]
    busy = [m for m in candidates if any(r.per_micrograph[m].n_truth and r.per_micrograph[m].n_picks_total
                                         for r in reports.values())]
    shown = (busy + [m for m in candidates if m not in busy])[:n_overlays]
    if not shown:
        click.echo("no micrograph in --micrographs matches the evaluated names; no overlays drawn", err=True)
    for i, (name, picks) in enumerate(pick_sets.items()):
        threshold = thresholds[i if len(thresholds) > 1 else 0] if thresholds else None
        note = f"score >= {threshold:g}" if threshold is not None else ""
        if threshold is None and reports[name].n_matched:
            # Thesis figures show picks above the threshold that reaches precision 0.8.
            threshold = evaluation.threshold_at_precision(truth, picks, box, 0.8,
                                                          micrographs=list(reports[name].per_micrograph))
            note = f"score >= {threshold:.3g} (precision 0.8 here)"
        for mic in shown:
            image = read_micrograph(mic_files[mic]).data
            safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name)
            side = box[mic] if isinstance(box, dict) else box
            written.append(plots.overlay(image, plots_dir / f"overlay_{safe}_{mic}.png",
                                         picks=picks.for_micrograph(mic), truth=truth.for_micrograph(mic),
                                         box_px=side, threshold=threshold, title=f"{mic}  {name} {note}"))
    return written


# --- simulate (issue: simulator) ------------------------------------------------------------------------
class _RangeType(click.ParamType):
    """A number or a range 'LO-HI' (also 'LO:HI' or 'LO,HI') of non-negative numbers."""

    name = "X or LO-HI"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        import re

        text = str(value).strip()
        number = r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+)"
        m = re.fullmatch(rf"{number}\s*(?:(?:-|:|,|\.\.)\s*{number})?", text)
        if not m:
            self.fail(f"{value!r} is not a number or a range like 1.0-3.5", param, ctx)
        lo = float(m.group(1))
        hi = float(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            self.fail(f"range {value!r} has its low end above its high end", param, ctx)
        return (lo, hi)


_RANGE = _RangeType()


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        sizes = [int(p) for p in parts]
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a size like 1024 or 1024x768 (rows x columns)") from None
    if len(sizes) == 1:
        sizes = sizes * 2
    if len(sizes) != 2 or min(sizes) < 32:
        raise click.BadParameter(f"{text!r}: give one or two sizes of at least 32 pixels")
    return sizes[0], sizes[1]


@cli.command()
@click.option("-n", "n_micrographs", type=click.IntRange(min=1), required=True, help="Micrographs to make.")
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False), required=True,
              help="Output folder: micrographs/*.mrc, coordinates/*.star, particles/*.star, manifest.toml.")
@click.option("--structure", "structure_path", type=click.Path(dir_okay=False),
              help="PDB or mmCIF model of the particle (default: a procedural particle).")
@click.option("--assembly", default="auto", show_default=True,
              help="With --structure: biological assembly to build ('auto': the first one defined, "
                   "'none': the deposited model, or an assembly name).")
@click.option("--chain", "chains", multiple=True, help="With --structure: keep only this chain (repeatable).")
@click.option("--symmetry", help="Build a point-group assembly (C5, D7, T, O, I) from the structure's chains "
                                 "or from a procedural subunit.")
@click.option("--shape", "kind", default=None,
              help="Procedural particle kind: random, globular, elongated, flat, multidomain, cyclic, "
                   "dihedral, tetrahedral, octahedral, icosahedral, ring, membrane, ribosome.")
@click.option("--mass", "mass_kDa", type=float, help="Procedural particle mass in kDa (default: drawn).")
@click.option("--per-micrograph-structure", is_flag=True,
              help="A different procedural particle on every micrograph (default: one for the dataset).")
@click.option("--size", "size", default=None, help="Micrograph size in pixels: 1024 or ROWSxCOLUMNS.")
@click.option("--pixel-size", "pixel_size", type=_RANGE, help="Pixel size in Å, or a range to draw from.")
@click.option("--diameter-px", "diameter_px", type=_RANGE,
              help="Particle diameter in pixels to aim for when drawing the pixel size (range).")
@click.option("--dose", type=_RANGE, help="Exposure in e/Å², or a range.")
@click.option("--defocus", type=_RANGE, help="Defocus in µm (underfocus), or a range.")
@click.option("--particles", "n_particles", type=click.IntRange(min=0),
              help="Particles per micrograph (default: drawn from the coverage range).")
@click.option("--coverage", type=_RANGE, help="Fraction of the area covered by particles, or a range.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file of SimulationConfig settings (command-line options override it).")
@click.option("--seed", type=int, default=0, show_default=True, help="Dataset seed: same seed, same output.")
@click.option("--force", is_flag=True, help="Write into a folder that already holds a simulated dataset.")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar or summary.")
def simulate(n_micrographs: int, out_dir: str, structure_path: str | None, assembly: str,
             chains: tuple[str, ...], symmetry: str | None, kind: str | None, mass_kDa: float | None,
             per_micrograph_structure: bool, size: str | None, pixel_size, diameter_px, dose, defocus,
             n_particles: int | None, coverage, config_path: str | None, seed: int, force: bool,
             quiet: bool) -> None:
    """Make labelled synthetic micrographs (MRC + RELION STAR + manifest).

    Without --structure the particle is procedural (no files needed). Every condition not fixed by an
    option is drawn from the documented ranges (docs/simulate.md); the same seed gives the same dataset.

    \b
    Examples:
      hydrapick simulate -n 20 -o sim/
      hydrapick simulate --structure 4hhb.pdb -n 20 -o sim/ --pixel-size 1.0 --dose 40
      hydrapick simulate --shape ribosome -n 10 -o ribo/ --pixel-size 5.36 --defocus 1-3
    """
    from pathlib import Path

    import numpy as np
    from rich.console import Console

    from .config import SimulationConfig, from_dict
    from .simulate import load_structure, procedural_structure, simulate_dataset, symmetric_assembly
    from .simulate.structures import StructureError

    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib

    console = Console(stderr=True)
    values: dict = {}
    if config_path:
        try:
            with open(config_path, "rb") as fh:
                values.update(tomllib.load(fh))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise click.ClickException(f"cannot read config '{config_path}': {exc}") from None
    if size:
        values["shape_px"] = _parse_size(size)
    for key, rng in (("pixel_size_A_range", pixel_size), ("particle_diameter_px_range", diameter_px),
                     ("dose_e_per_A2_range", dose), ("defocus_um_range", defocus),
                     ("coverage_range", coverage)):
        if rng is not None:
            values[key] = rng
    if n_particles is not None:
        values["n_particles"] = n_particles
    if kind:
        values["structure_kind"] = kind
    if mass_kDa is not None:
        values["structure_mass_kDa_range"] = (mass_kDa, mass_kDa)
    try:
        config = from_dict(SimulationConfig, values, where=config_path or "simulate options")
    except (ValueError, TypeError) as exc:
        raise click.ClickException(str(exc)) from None

    out = Path(out_dir)
    if (out / "manifest.toml").exists() and not force:
        raise click.ClickException(f"'{out}' already holds a simulated dataset (manifest.toml); "
                                   "use --force to overwrite it or choose another folder")
    if structure_path is not None and (kind or mass_kDa is not None or per_micrograph_structure):
        raise click.ClickException("--shape, --mass and --per-micrograph-structure are for procedural "
                                   "particles; leave them out with --structure")
    structure = None
    try:
        if structure_path is not None:
            structure = load_structure(structure_path, chains=list(chains) or None,
                                       assembly=None if assembly.lower() == "none" else assembly)
            if symmetry:
                structure = symmetric_assembly(structure, symmetry, seed)
        elif symmetry:
            if per_micrograph_structure:
                raise click.ClickException("--symmetry builds one particle; "
                                           "leave out --per-micrograph-structure")
            structure = procedural_structure(kind or "random", seed, mass_kDa=mass_kDa, symmetry=symmetry)
    except (StructureError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    command = "hydrapick " + " ".join(sys.argv[1:]) if sys.argv else "hydrapick simulate"

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("simulating"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, disable=quiet, transient=True) as bar:
        task = bar.add_task("simulate", total=n_micrographs)
        try:
            manifest = simulate_dataset(out, n_micrographs, config, structure=structure, seed=seed,
                                        progress=lambda done, total: bar.update(task, completed=done),
                                        per_micrograph_structure=per_micrograph_structure,
                                        extra={"command": command})
        except (StructureError, ValueError, OSError) as exc:
            raise click.ClickException(str(exc)) from None
    if quiet:
        return
    with open(manifest, "rb") as fh:
        records = tomllib.load(fh)["micrograph"]
    from rich.table import Table

    table = Table(title=f"simulated {len(records)} micrographs -> {out}", show_header=True)
    for col in ("", "min", "median", "max"):
        table.add_column(col, justify="right")
    rows = (("pixel size (Å)", "pixel_size_A", "{:.3f}"), ("diameter (Å)", "diameter_A", "{:.1f}"),
            ("diameter (px)", "diameter_px", "{:.1f}"), ("labelled particles", "n_particles", "{:.0f}"))
    for label, key, fmt in rows:
        vals = [float(r[key]) for r in records]
        table.add_row(label, *(fmt.format(v) for v in (min(vals), float(np.median(vals)), max(vals))))
    console.print(table)
    console.print(f"manifest: {manifest}")


def main() -> None:
    try:
        cli(prog_name="hydrapick")
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
