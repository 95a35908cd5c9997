"""`evaluate_picks_files`: everything ``hydrapick evaluate`` does, from files to reports, JSON and figures.

Reads the truth and each picker's coordinates (any format, file or folder), works out the box side (given,
or from the particle diameter and each micrograph's pixel size), flips y and leaves out the edges where
asked, scores every picker with `hydrapick.evaluation.evaluate` and writes the JSON report and the figures.
The command line only parses options, calls it and prints the tables.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..config import COINCIDENT_LABEL_PX
from ..io.atomic import check_writable
from ..io.mrc import no_pixel_size
from ..picks import Picks, micrograph_key
from ..version import __version__
from .coordinates import (
    CoordinateSet,
    check_inside,
    drop_near_edge,
    find_micrographs,
    load_coordinates,
    merge_coincident,
)
from .metrics import DEFAULT_IOU_THRESHOLD, evaluate, threshold_at_precision
from .report import EvaluationReport, write_report_json

log = logging.getLogger(__name__)

PathLike = str | os.PathLike


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_picks_files` found and wrote.

    Parameters
    ----------
    reports : dict of label -> EvaluationReport
        One report per picker, in the order the picks were given.
    box_px : float or dict of micrograph key -> float
        The box side used for the IoU, in micrograph pixels (per micrograph when it came from each
        micrograph's own pixel size).
    truth : CoordinateSet
        The truth as scored (flipped and inside the border where asked).
    picks : dict of label -> Picks
        Each picker's coordinates as scored.
    json_path : Path or None
        The JSON report written.
    figures : list of Path
        The PNG figures written (curves, then overlays).
    merged_truth : int
        True coordinates merged into another of the same micrograph closer than
        `hydrapick.config.COINCIDENT_LABEL_PX` (one particle written twice).
    """

    reports: dict[str, EvaluationReport]
    box_px: float | dict[str, float]
    truth: CoordinateSet
    picks: dict[str, Picks]
    json_path: Path | None = None
    figures: list[Path] = field(default_factory=list)
    merged_truth: int = 0


def evaluate_picks_files(truth: PathLike, picks: PathLike | Sequence[PathLike], *,
                         labels: Sequence[str] | None = None, box_px: float | None = None,
                         diameter_A: float | None = None, pixel_size_A: float | None = None,
                         iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                         thresholds: float | Sequence[float] | None = None, flip_y_truth: bool = False,
                         flip_y_picks: bool = False, image_height: int | None = None,
                         micrographs: PathLike | None = None, border_A: float | None = None,
                         include_unlabelled: bool = False, json_path: PathLike | None = None,
                         plots_dir: PathLike | None = None, n_overlays: int = 3) -> EvaluationResult:
    """Score one or more pickers' coordinate files against true coordinates (``hydrapick evaluate``).

    Parameters
    ----------
    truth : path
        True particle coordinates: a file or a folder of per-micrograph files (STAR, box, cbox, Topaz
        txt, cryoSPARC cs). An empty per-micrograph file is a micrograph without particles.
    picks : path or sequence of paths
        Picks to score (file or folder, any supported format), one per picker.
    labels : sequence of str, optional
        Name of each picker, in the order of ``picks`` (default: the file or folder name; repeated names
        get ``#2``, ``#3``).
    box_px : float, optional
        Box side in micrograph pixels used for the IoU. Give it or ``diameter_A``.
    diameter_A : float, optional
        Particle diameter in Angstrom: box = diameter / pixel size.
    pixel_size_A : float, optional
        Pixel size in Angstrom for ``diameter_A`` and ``border_A`` (default: each micrograph's header).
    iou_threshold : float
        A pick is a true positive when IoU > this with an unmatched true box.
    thresholds : float or sequence of float, optional
        Score threshold for precision/recall/F1: one for all pickers or one per picker (default: every
        pick in the file).
    flip_y_truth, flip_y_picks : bool
        Mirror y (``y -> height - 1 - y``) of the truth / of every picker.
    image_height : int, optional
        Micrograph height in pixels for the flips (default: each micrograph's own, from ``micrographs``).
    micrographs : path, optional
        The micrographs (folder, glob or list): heights, pixel sizes, sizes for the border, overlays.
    border_A : float, optional
        Leave out true particles and picks whose centre is closer than this to the micrograph edge, in
        Angstrom (needs ``micrographs``).
    include_unlabelled : bool
        Also evaluate micrographs that have picks but no truth (their picks are false positives).
    json_path : path, optional
        Write every metric (overall and per micrograph, with curves) to this JSON file.
    plots_dir : path, optional
        Write ``pr.png``, ``roc.png`` and, with ``micrographs``, overlays of picks and truth.
    n_overlays : int
        Micrographs drawn per picker with ``plots_dir``.

    Returns
    -------
    EvaluationResult

    Raises
    ------
    ValueError
        Inconsistent arguments, no true particles, or coordinates that cannot be placed (the message
        says which); `hydrapick.io.FormatError` for unreadable files.
    """
    for target, what in ((json_path, "--json file"), (plots_dir, "--plots folder")):
        if target is not None:  # before the work, not after it
            check_writable(target, what, folder=target is plots_dir)
    picks_paths = [Path(p) for p in ([picks] if isinstance(picks, (str, os.PathLike)) else picks)]
    threshold_list = [] if thresholds is None else (
        [float(thresholds)] if isinstance(thresholds, (int, float)) else list(thresholds))
    if labels and len(labels) != len(picks_paths):
        raise ValueError(f"--label was given {len(labels)} times for {len(picks_paths)} --picks")
    if len(threshold_list) > 1 and len(threshold_list) != len(picks_paths):
        raise ValueError(f"--threshold was given {len(threshold_list)} times for {len(picks_paths)} --picks")
    if plots_dir is not None and n_overlays > 0 and micrographs is None:
        log.info("no --micrographs: --plots writes curves only")
    mic_files = find_micrographs(micrographs) if micrographs is not None else {}
    headers = _MicrographHeaders(mic_files)
    box = _resolve_box(box_px, diameter_A, pixel_size_A, headers)
    heights = _resolve_heights(image_height, headers) if (flip_y_truth or flip_y_picks) else None
    truth_set = load_coordinates(truth, flip_y=flip_y_truth, image_height=heights)
    # A particle written twice would count as one found and one missed, halving recall and AP.
    merged_picks, merged = merge_coincident(truth_set.picks)
    if merged:
        log.warning("%s: merged %d coincident true coordinates (closer than %g px: one particle written "
                    "twice)", truth, merged, COINCIDENT_LABEL_PX)
        truth_set = dataclasses.replace(truth_set, picks=merged_picks)
    check_inside(truth_set.picks, truth, {key: shape for key, _, shape, _ in headers.items()}
                 if headers else None)
    edge = _resolve_border(border_A, pixel_size_A, headers)
    if edge is not None:
        truth_set = dataclasses.replace(truth_set, picks=drop_near_edge(truth_set.picks, *edge))
    if len(truth_set.picks) == 0:
        raise ValueError(f"{truth}: no true particles found")
    if isinstance(heights, dict):
        lacking = [m for m in truth_set.micrographs if m not in heights]
        if lacking:
            raise ValueError(f"micrograph {lacking[0]} of the truth has no image in {micrographs}, so its y "
                             "cannot be flipped")
    names = picker_labels(picks_paths, labels)
    reports: dict[str, EvaluationReport] = {}
    pick_sets: dict[str, Picks] = {}
    for i, (name, path) in enumerate(zip(names, picks_paths, strict=True)):
        # Picks on micrographs without an image cannot be flipped; they are not evaluated anyway
        # unless include_unlabelled, and then only micrographs with an image are.
        picked = load_coordinates(path, flip_y=flip_y_picks, image_height=heights, missing_height="drop")
        if edge is not None:
            # Picks on micrographs without an image are not evaluated (see above); keep them out.
            known = np.array([micrograph_key(m) in edge[0] for m in picked.picks.micrograph], dtype=bool)
            picked = dataclasses.replace(picked, picks=drop_near_edge(picked.picks[known], *edge))
        evaluated = truth_set.micrographs + (picked.micrographs if include_unlabelled else [])
        reports[name] = evaluate(truth_set.picks, picked.picks, box, iou_threshold=iou_threshold,
                                 threshold=_threshold_of(threshold_list, i), micrographs=evaluated)
        pick_sets[name] = picked.picks

    written_json = None
    if json_path is not None:
        metadata = {"truth": str(truth),
                    "picks": {n: str(p) for n, p in zip(names, picks_paths, strict=True)},
                    "box_px": box, "iou_threshold": iou_threshold, "hydrapick_version": __version__}
        written_json = write_report_json(json_path, reports, curves=True, metadata=metadata)
    figures = []
    if plots_dir is not None:
        figures = write_figures(Path(plots_dir), reports, pick_sets, truth_set.picks, mic_files, box,
                                threshold_list, n_overlays)
    return EvaluationResult(reports=reports, box_px=box, truth=truth_set, picks=pick_sets,
                            json_path=written_json, figures=figures, merged_truth=merged)


def picker_labels(paths: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """A unique label per picker: ``labels``, or each file's stem / folder's name; repeats get ``#2``..."""
    names = list(labels) if labels else [p.stem if p.is_file() else p.name for p in paths]
    seen: dict[str, int] = {}
    unique = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        unique.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return unique


def write_figures(plots_dir: Path, reports: dict[str, EvaluationReport], pick_sets: dict[str, Picks],
                  truth: Picks, mic_files: dict[str, Path], box: float | dict[str, float],
                  thresholds: Sequence[float], n_overlays: int) -> list[Path]:
    """PR and ROC curves of every picker and, with micrograph files, ``n_overlays`` overlays per picker.

    Overlays show picks above the picker's threshold, or without one the threshold reaching precision
    0.8 on these data (as the thesis figures do); micrographs with both particles and picks come first.
    """
    from ..io import read_micrograph
    from . import plots

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
        log.warning("no micrograph in --micrographs matches the evaluated names; no overlays drawn")
    for i, (name, picks) in enumerate(pick_sets.items()):
        threshold = _threshold_of(thresholds, i)
        note = f"score >= {threshold:g}" if threshold is not None else ""
        if threshold is None and reports[name].n_matched:
            threshold = threshold_at_precision(truth, picks, box, 0.8,
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


def _threshold_of(thresholds: Sequence[float], i: int) -> float | None:
    """Picker ``i``'s threshold: its own, the one shared by all, or None."""
    return thresholds[i if len(thresholds) > 1 else 0] if thresholds else None


class _MicrographHeaders:
    """Shape and pixel size of each micrograph, read once and only when needed."""

    def __init__(self, mic_files: dict[str, Path]):
        self.files = mic_files
        self._read: list | None = None

    def __bool__(self) -> bool:
        return bool(self.files)

    def items(self) -> list[tuple[str, Path, tuple[int, ...], float | None]]:
        """(key, path, shape, pixel size in A or None) per micrograph."""
        if self._read is None:
            from ..io import read_micrograph

            self._read = []
            for key, path in self.files.items():
                mic = read_micrograph(path)
                self._read.append((key, path, mic.shape, mic.pixel_size_A))
        return self._read


def _resolve_box(box_px, diameter_A, pixel_size_A, headers: _MicrographHeaders) -> float | dict[str, float]:
    if box_px is not None:
        if diameter_A is not None:
            raise ValueError("give either --box or --diameter, not both")
        return box_px
    if diameter_A is None:
        raise ValueError("give the box size: --box PX, or --diameter A with --apix A")
    if diameter_A <= 0 or (pixel_size_A is not None and pixel_size_A <= 0):
        raise ValueError("--diameter and --apix must be positive")
    if pixel_size_A is not None:
        return diameter_A / pixel_size_A
    if not headers:
        raise ValueError("--diameter needs --apix (or --micrographs whose headers give the pixel size)")
    # Each micrograph's own pixel size: simulated or merged datasets need not share one.
    boxes = {}
    for key, path, _, apix in headers.items():
        if apix is None:
            raise ValueError(f"{no_pixel_size(path)}; give --apix")
        boxes[key] = diameter_A / apix
    return boxes


def _resolve_border(border_A, pixel_size_A, headers: _MicrographHeaders):
    """(shapes, border in pixels per micrograph) for ``border_A``, or None without it."""
    if border_A is None:
        return None
    if border_A < 0:
        raise ValueError("--border must not be negative")
    if not headers:
        raise ValueError("--border needs --micrographs (the micrographs' sizes)")
    shapes, border = {}, {}
    for key, path, shape, header_apix in headers.items():
        apix = pixel_size_A or header_apix
        if apix is None:
            raise ValueError(f"{no_pixel_size(path)}; give --apix")
        shapes[key], border[key] = shape, border_A / apix
    return shapes, border


def _resolve_heights(image_height, headers: _MicrographHeaders):
    if image_height is not None:
        return image_height
    if not headers:
        raise ValueError("--flip-y-truth/--flip-y-picks need --image-height or --micrographs")
    return {key: shape[0] for key, _, shape, _ in headers.items()}
