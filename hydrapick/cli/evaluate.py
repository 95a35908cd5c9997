"""``hydrapick evaluate``: score any picker's coordinates against ground truth, with tables and figures."""

from __future__ import annotations

import logging

import click

from ..version import __version__
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
              help="Folder (or glob) of the MRC micrographs: heights for --flip-y-*, pixel size, overlays.")
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
    import dataclasses
    from pathlib import Path

    import numpy as np

    from .. import evaluation
    from ..io import FormatError
    from ..picks import micrograph_key

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
        headers = _Headers(mic_files)
        box = _evaluate_box(box_px, diameter_A, pixel_size_A, headers)
        heights = _evaluate_heights(image_height, headers) if (flip_y_truth or flip_y_picks) else None
        truth = evaluation.load_coordinates(truth_path, flip_y=flip_y_truth, image_height=heights)
        edge = _evaluate_border(border_A, pixel_size_A, headers)
        if edge is not None:
            truth = dataclasses.replace(truth, picks=evaluation.drop_near_edge(truth.picks, *edge))
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
            if edge is not None:
                # Picks on micrographs without an image are not evaluated (see above); keep them out.
                known = np.array([micrograph_key(m) in edge[0] for m in picked.picks.micrograph], dtype=bool)
                inside = evaluation.drop_near_edge(picked.picks[known], *edge)
                picked = dataclasses.replace(picked, picks=inside)
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


class _Headers:
    """Shape and pixel size of each micrograph in --micrographs, read once and only when needed."""

    def __init__(self, mic_files):
        self.files = mic_files
        self._read = None

    def __bool__(self) -> bool:
        return bool(self.files)

    def items(self):
        """(key, path, shape, pixel size in A or None) per micrograph."""
        if self._read is None:
            from ..io import read_micrograph

            self._read = []
            for key, path in self.files.items():
                mic = read_micrograph(path)
                self._read.append((key, path, mic.shape, mic.pixel_size_A))
        return self._read


def _evaluate_box(box_px, diameter_A, pixel_size_A, headers) -> float | dict[str, float]:
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
    if not headers:
        raise click.ClickException("--diameter needs --apix (or --micrographs whose headers give the "
                                   "pixel size)")
    # Each micrograph's own pixel size: simulated or merged datasets need not share one.
    boxes = {}
    for key, path, _, apix in headers.items():
        if apix is None:
            raise click.ClickException(f"{path}: the header has no pixel size; give --apix")
        boxes[key] = diameter_A / apix
    return boxes


def _evaluate_border(border_A, pixel_size_A, headers):
    """(shapes, border in pixels per micrograph) for --border, or None without it."""
    if border_A is None:
        return None
    if border_A < 0:
        raise click.ClickException("--border must not be negative")
    if not headers:
        raise click.ClickException("--border needs --micrographs (the micrographs' sizes)")
    shapes, border = {}, {}
    for key, path, shape, header_apix in headers.items():
        apix = pixel_size_A or header_apix
        if apix is None:
            raise click.ClickException(f"{path}: the header has no pixel size; give --apix")
        shapes[key], border[key] = shape, border_A / apix
    return shapes, border


def _evaluate_heights(image_height, headers):
    if image_height is not None:
        return image_height
    if not headers:
        raise click.ClickException("--flip-y-truth/--flip-y-picks need --image-height or --micrographs")
    return {key: shape[0] for key, _, shape, _ in headers.items()}


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
    from .. import evaluation, plots
    from ..io import read_micrograph

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
