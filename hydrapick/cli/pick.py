"""``hydrapick pick``: pick micrographs with the bundled generic model or a fine-tuned head."""

from __future__ import annotations

import sys

import click

from ..config import (
    ADAPT_MIN_MICROGRAPHS,
    ADAPT_OBJECTIVES,
    PICK_BATCH_SIZE,
    PICK_HEAD,
    SCORE_FLOOR,
    AdaptConfig,
)
from .group import cli
from .options import device_option, quiet_option, threads_option
from .pick_display import (
    adapt_progress,
    adapt_summary,
    calibrate_progress,
    pick_progress,
    pick_summary,
)

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
@click.option("--head", default=PICK_HEAD, show_default=True,
              help="Head of the model: 'generic' for a new specimen, else a fine-tuned head's name.")
@click.option("--diameter", "diameter_A", type=float,
              help="Particle diameter in Angstrom, roughly: the picker measures the scale itself between "
                   "half and twice it on a few micrographs. Leave it out to search 50-600 Angstrom.")
@click.option("--no-calibrate", is_flag=True,
              help="Pick at --diameter exactly, without measuring the scale first.")
@click.option("--calibration", "calibration_path", type=click.Path(dir_okay=False, exists=True),
              help="Reuse this scale_calibration.json (of an earlier run, or shared by SLURM shards) "
                   "instead of measuring.")
@click.option("--apix", "pixel_size_A", type=float,
              help="Pixel size in Angstrom for every micrograph (default: from the STAR list or MRC header; "
                   "TIFF, PNG and JPEG micrographs need it).")
@click.option("--threshold", type=float,
              help="Score cut for the main output (default: the calibrated threshold stored with the head).")
@click.option("--min-distance", "min_distance_A", type=float,
              help="Minimum distance between picks in Angstrom (default: 0.6 x diameter).")
@click.option("--border", "border_A", type=float,
              help="Drop picks whose centre is closer than this to the micrograph edge, in Angstrom "
                   "(default: half the diameter, so every pick lies wholly inside; 0 keeps all).")
@click.option("--score-floor", type=float, default=SCORE_FLOOR, show_default=True,
              help="Candidates above this score go to the candidates output, for re-thresholding later.")
@device_option
@click.option("--batch-size", type=int, default=PICK_BATCH_SIZE, show_default=True,
              help="Micrographs per forward pass (those of equal size are batched).")
@threads_option
@click.option("--full-precision", is_flag=True,
              help="Compute in float32 (default: bfloat16/float16 autocast on GPUs and on CPUs with "
                   "hardware bfloat16; scores then differ by about 0.01).")
@click.option("--tta", is_flag=True,
              help="Test-time augmentation: average the network over the 8 rotations and mirror images of "
                   "each micrograph (about 8x slower; more accurate on unseen specimens).")
@click.option("--scales", default="1", show_default=True,
              help="Pick at these multiples of --diameter and merge the candidates, e.g. 0.89,1,1.12 when "
                   "the diameter is known only to a quarter (one network pass per scale).")
@click.option("--adapt", is_flag=True,
              help="First learn this dataset's particles and background from the micrographs themselves "
                   "(no labels; a new head, minutes on a CPU), then pick with it. A self-check on "
                   "held-out micrographs decides whether it is used; if not, the generic head picks. "
                   "With --head NAME the fine-tuned head NAME teaches instead (self-training). "
                   "Experimental: not yet measured better than the generic head on average "
                   "(docs/picking.md).")
@click.option("--adapt-micrographs", type=click.IntRange(min=ADAPT_MIN_MICROGRAPHS),
              default=AdaptConfig.micrographs, show_default=True,
              help="Learn from at most this many micrographs, spread over the run (with --watch: wait for "
                   f"this many). Fewer than {ADAPT_MIN_MICROGRAPHS} leave none to hold out for the "
                   "self-check: the generic head then picks.")
@click.option("--adapt-objective", type=click.Choice(ADAPT_OBJECTIVES), default=AdaptConfig.objective,
              show_default=True,
              help="What adaptation does with places that are neither confident picks nor empty: leave "
                   "them out of the loss (ignore), or hold the number of particles predicted anywhere "
                   "off the seeds to the estimated count (count-prior, Topaz's GE-binomial).")
@click.option("--adapt-output", type=click.Path(dir_okay=False),
              help="Save the adapted model here; pick later runs with --model FILE --head adapted.")
@click.option("--shard", help="K/N: pick every N-th micrograph starting at K (0-based). Default in a SLURM "
                              "job array: SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT.")
@click.option("--skip-existing", is_flag=True,
              help="Folder outputs: do not pick micrographs whose output files exist (continue a run).")
@click.option("--preview", "preview_dir", type=click.Path(file_okay=False),
              help="Write PNG overlays of the first few micrographs with their picks to this folder.")
@click.option("--watch", is_flag=True,
              help="Keep watching MICROGRAPHS (one folder or quoted glob) and pick each new micrograph once "
                   "its size stops changing, into a job folder (-o); see docs/relion.md.")
@click.option("--watch-timeout", type=click.FloatRange(min=0), default=3600.0, show_default=True,
              help="With --watch: stop after this many seconds without a new micrograph.")
@click.option("--poll-interval", type=click.FloatRange(min=0.01), default=5.0, show_default=True,
              help="With --watch: seconds between looks at the folder.")
@quiet_option(help="No progress bar or summary; errors only.")
def pick(micrographs: tuple[str, ...], output: str, fmt: str | None, model_path: str | None, head: str,
         diameter_A: float | None, no_calibrate: bool, calibration_path: str | None,
         pixel_size_A: float | None, threshold: float | None,
         min_distance_A: float | None, border_A: float | None, score_floor: float, device: str,
         batch_size: int, threads: int | None, full_precision: bool, tta: bool, scales: str, adapt: bool,
         adapt_micrographs: int, adapt_objective: str, adapt_output: str | None, shard: str | None,
         skip_existing: bool, preview_dir: str | None, watch: bool, watch_timeout: float,
         poll_interval: float, quiet: bool) -> None:
    """Pick particles in micrographs with the bundled generic model or a fine-tuned one.

    MICROGRAPHS are MRC (or TIFF, PNG, JPEG) files, globs ('Movies/*.mrc'), folders, a RELION
    micrographs STAR file or a text list of paths. Coordinates are written in pixels of the micrographs
    as read. A micrograph that cannot be read is reported and skipped; the exit status is then 3.

    \b
    Examples:
      hydrapick pick 'Movies/*.mrc' --diameter 300 -o picks.star
      hydrapick pick 'Movies/*.mrc' -o picks.star            # the particle size is measured
      hydrapick pick CtfFind/job003/micrographs_ctf.star --diameter 180 -o AutoPick/job010
      hydrapick pick 'Movies/*.mrc' --diameter 150 --adapt --adapt-output adapted.pt -o picks.star
    """
    from rich.console import Console

    from ..checkpoint import CheckpointError
    from ..io import FormatError
    from ..io.inputs import InputError
    from ..picking import pick as run_pick
    from ..picking.scales import parse_scales
    from ..picking.shards import parse_shard, shard_from_environment

    err = Console(stderr=True, quiet=quiet)
    try:
        parse_scales(scales)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--scales") from None
    if (adapt_output or adapt_micrographs != AdaptConfig.micrographs
            or adapt_objective != AdaptConfig.objective) and not adapt:
        raise click.UsageError("--adapt-output, --adapt-micrographs and --adapt-objective need --adapt")
    adapt_config = AdaptConfig(micrographs=adapt_micrographs, objective=adapt_objective) if adapt else None
    if watch:
        from .pick_watch import run_watch

        options = dict(head=head, diameter_A=diameter_A, calibrate=not no_calibrate,
                       calibration=calibration_path, pixel_size_A=pixel_size_A, threshold=threshold,
                       min_distance_A=min_distance_A, border_A=border_A, score_floor=score_floor,
                       device=device, batch_size=batch_size, num_threads=threads,
                       mixed_precision=not full_precision, tta=tta, scales=scales, preview_dir=preview_dir,
                       adapt=adapt_config,
                       adapt_output=adapt_output)
        if run_watch(micrographs, output, fmt, model_path, watch_timeout, poll_interval, shard, err, options):
            sys.exit(PICK_EXIT_FAILED)
        return
    try:
        shard_spec = parse_shard(shard) if shard else shard_from_environment()
        if shard_spec is not None and not shard:
            err.print(f"SLURM array task: shard {shard_spec[0]}/{shard_spec[1]}")
        with calibrate_progress(err, quiet or no_calibrate) as on_calibrate, \
                adapt_progress(err, quiet or not adapt) as on_adapt, \
                pick_progress(err, quiet) as progress:
            report = run_pick(list(micrographs), output, format=fmt, model=model_path, head=head,
                              diameter_A=diameter_A, calibrate=not no_calibrate, calibration=calibration_path,
                              calibrate_progress=on_calibrate, pixel_size_A=pixel_size_A, threshold=threshold,
                              min_distance_A=min_distance_A, border_A=border_A, score_floor=score_floor,
                              device=device, batch_size=batch_size, num_threads=threads,
                              mixed_precision=not full_precision, tta=tta, scales=scales, shard=shard_spec,
                              skip_existing=skip_existing, preview_dir=preview_dir, progress=progress,
                              adapt=adapt_config or False,
                              adapt_output=adapt_output, adapt_progress=on_adapt)
    except (InputError, FormatError, CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    if not quiet:
        if report.adaptation is not None:
            adapt_summary(report.adaptation, Console())
        pick_summary(report, Console())
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
