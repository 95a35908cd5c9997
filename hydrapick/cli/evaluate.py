"""``hydrapick evaluate``: score any picker's coordinates against ground truth, with tables and figures."""

from __future__ import annotations

import click

from .group import cli


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
              help="Folder (or glob) of the micrographs (MRC, TIFF, PNG, JPEG): heights for --flip-y-*, "
                   "pixel size (MRC header), overlays.")
@click.option("--border", "border_A", type=float,
              help="Leave out true particles and picks whose centre is closer than this to the micrograph "
                   "edge, in Angstrom (needs --micrographs): compares pickers with different edge rules "
                   "on the same region (hydrapick pick's default is half the diameter).")
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
             micrographs_path: str | None, border_A: float | None, include_unlabelled: bool,
             json_path: str | None, plots_dir: str | None, n_overlays: int,
             per_micrograph: bool | None) -> None:
    """Score picks from any picker against ground truth (AP, AUROC, F1, PR/ROC curves, overlays).

    Micrographs are matched by name across formats (mic_001.mrc, mic_001_autopick.star and mic_001
    are one micrograph). Metric definitions are in docs/evaluate.md.

    \b
    Example:
      hydrapick evaluate --truth truth/ --picks picks.star --picks topaz.txt --label hydrapick \\
          --label topaz --diameter 300 --apix 5.36 --json scores.json --plots figs --micrographs mics/
    """
    from ..evaluation import evaluate_picks_files
    from ..io import FormatError

    try:
        result = evaluate_picks_files(
            truth_path, picks_paths, labels=labels, box_px=box_px, diameter_A=diameter_A,
            pixel_size_A=pixel_size_A, iou_threshold=iou_threshold, thresholds=thresholds,
            flip_y_truth=flip_y_truth, flip_y_picks=flip_y_picks, image_height=image_height,
            micrographs=micrographs_path, border_A=border_A, include_unlabelled=include_unlabelled,
            json_path=json_path, plots_dir=plots_dir, n_overlays=n_overlays)
    except (FormatError, ValueError, OSError) as exc:
        hint = " in --micrographs (or give --apix)" if str(exc).startswith("no box size") else ""
        raise click.ClickException(f"{exc}{hint}") from exc

    if result.merged_truth:
        click.echo(f"truth: merged {result.merged_truth} coincident coordinates (one particle written twice)")
    _evaluate_print(result.reports, result.box_px, per_micrograph)
    if result.json_path is not None:
        click.echo(f"wrote {json_path}")
    if plots_dir is not None:
        click.echo(f"wrote {len(result.figures)} figures to {plots_dir}")


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
