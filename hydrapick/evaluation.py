"""Scoring picks against ground truth: matching at IoU, AP, AUROC, PR/ROC curves, F1 and reports.

Matching follows the HydraPicker thesis (section 4.4): every pick and every true particle is a square
box of side ``box_px`` centred on its coordinate; picks are processed from the highest score down and a
pick is a true positive when its box overlaps a still-unmatched true box of the same micrograph with
IoU > ``iou_threshold`` (0.6); it takes the unmatched true box it overlaps most. A true particle is
matched at most once, so a second pick on it is a false positive.

Curves and metrics are computed from the ranked picks at every distinct score (all picks with a score
at or above a threshold are kept, ties together), with recall over *all* true particles, including
those no pick reaches. Definitions, in particular of AP interpolation and of AUROC for detection, are
in docs/evaluate.md and in `EvaluationReport`.
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from .picks import Picks, micrograph_key

log = logging.getLogger(__name__)

DEFAULT_IOU_THRESHOLD = 0.6
# Coordinate files a truth or picks folder may hold (the extensions hydrapick.io reads).
COORDINATE_SUFFIXES = (".star", ".box", ".cbox", ".txt", ".cs")
MICROGRAPH_SUFFIXES = (".mrc", ".mrcs")


@dataclass(frozen=True)
class Curves:
    """Precision-recall and ROC curves of one set of ranked picks.

    Parameters
    ----------
    thresholds : (K,) float64
        Distinct pick scores in descending order; point k keeps every pick with score >= thresholds[k].
        Picks without a score rank above all scored picks (threshold +inf).
    precision, recall : (K,) float64
        At each threshold. Recall is over all true particles (NaN when there are none).
    n_picks, n_matched : (K,) int64
        Picks kept and true positives among them at each threshold.
    fpr, tpr : (K + 2,) float64
        ROC curve from (0, 0) to (1, 1): false-positive picks kept / all false-positive picks, and recall.
        The last point comes from the true particles no pick matched (ranked below every pick).
    """

    thresholds: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    n_picks: np.ndarray
    n_matched: np.ndarray
    fpr: np.ndarray
    tpr: np.ndarray

    def to_dict(self) -> dict:
        return {name: [_json_float(v) for v in getattr(self, name).tolist()]
                for name in ("thresholds", "precision", "recall", "n_picks", "n_matched", "fpr", "tpr")}


@dataclass(frozen=True)
class EvaluationReport:
    """Scores of one picker on one micrograph or on a set of micrographs (pooled).

    Metrics (NaN where undefined, e.g. recall without true particles):

    - ``ap``: average precision, the area under the precision-recall curve with all-point interpolation
      (as in PASCAL VOC 2010+ and COCO, without COCO's 101-point sampling): precision at each recall
      is replaced by the best precision at that or any higher recall, and the area is summed over the
      recall steps ``sum_k (r_k - r_{k-1}) * max_{j>=k} p_j`` with ``r_0 = 0``. Recall is over all true
      particles, so particles no pick reaches cap the area below 1.
    - ``auroc``: area under the ROC curve whose samples are the picks (positive when matched, negative
      otherwise) plus every unmatched true particle as a positive scored below all picks. It equals the
      probability that a random true particle is found with a higher score than a random false pick
      (ties count one half; a particle never found loses to every false pick). NaN without false picks
      or without true particles.
    - ``precision``, ``recall``, ``f1``: at ``threshold`` (all picks when it is None, i.e. the picker's
      own threshold was applied when the file was written); ``f1 = 2 TP / (2 TP + FP + FN)``.
    - ``best_f1`` and ``best_f1_threshold``: the highest F1 over all thresholds and the (highest) score
      threshold reaching it.
    - ``recall_at_precision_0_9``: the highest recall at a threshold whose precision is >= 0.9 (0 when
      none is).
    - ``n_truth``, ``n_picks``, ``n_matched``: true particles, picks at ``threshold`` and true positives
      among them; ``n_picks_total``: all picks scored (the curves use them all).
    - ``mean_offset_px``: mean distance between matched picks (at ``threshold``) and their particles.
    """

    ap: float
    auroc: float
    precision: float
    recall: float
    f1: float
    threshold: float | None
    best_f1: float
    best_f1_threshold: float
    recall_at_precision_0_9: float
    n_truth: int
    n_picks: int
    n_matched: int
    n_picks_total: int
    mean_offset_px: float
    box_px: float
    iou_threshold: float
    n_micrographs: int
    curves: Curves
    per_micrograph: dict[str, EvaluationReport] = field(default_factory=dict)
    skipped_picks: dict[str, int] = field(default_factory=dict)
    skipped_truth: dict[str, int] = field(default_factory=dict)

    def to_dict(self, *, curves: bool = False, per_micrograph: bool = True) -> dict:
        """Plain JSON-ready values (NaN and infinities become None).

        Parameters
        ----------
        curves : bool
            Include the PR/ROC arrays (overall and per micrograph).
        per_micrograph : bool
            Include the per-micrograph reports.
        """
        out: dict = {}
        for name in ("ap", "auroc", "precision", "recall", "f1", "threshold", "best_f1", "best_f1_threshold",
                     "recall_at_precision_0_9", "mean_offset_px", "box_px", "iou_threshold"):
            out[name] = _json_float(getattr(self, name))
        for name in ("n_truth", "n_picks", "n_matched", "n_picks_total", "n_micrographs"):
            out[name] = int(getattr(self, name))
        if self.skipped_picks or self.skipped_truth:
            out["skipped_picks"] = dict(self.skipped_picks)
            out["skipped_truth"] = dict(self.skipped_truth)
        if curves:
            out["curves"] = self.curves.to_dict()
        if per_micrograph and self.per_micrograph:
            out["per_micrograph"] = {name: r.to_dict(curves=curves, per_micrograph=False)
                                     for name, r in self.per_micrograph.items()}
        return out


def box_iou(dx: np.ndarray, dy: np.ndarray, box_px: float) -> np.ndarray:
    """IoU of two axis-aligned squares of side ``box_px`` whose centres differ by (dx, dy) pixels."""
    overlap = np.clip(box_px - np.abs(dx), 0.0, None) * np.clip(box_px - np.abs(dy), 0.0, None)
    return overlap / (2.0 * box_px * box_px - overlap)


def match_picks(truth: Picks, picks: Picks, box_px: float, *,
                iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> np.ndarray:
    """Greedy thesis matching of picks to true particles, micrograph by micrograph.

    Parameters
    ----------
    truth, picks : Picks
        Micrographs are matched by `micrograph_key`.
    box_px : float
        Box side in pixels for both truth and picks.
    iou_threshold : float
        A pick matches when IoU > this.

    Returns
    -------
    (len(picks),) int64
        Index into ``truth`` of the particle each pick matched, -1 for a false positive.
    """
    _check_box(box_px, iou_threshold)
    t_keys, p_keys = _keys(truth.micrograph), _keys(picks.micrograph)
    index = {key: i for i, key in enumerate(dict.fromkeys(t_keys.tolist()))}
    t_id = np.array([index[k] for k in t_keys.tolist()], dtype=np.int64)
    p_id = np.array([index.get(k, -1) for k in p_keys.tolist()], dtype=np.int64)
    return _match(truth.x, truth.y, t_id, picks.x, picks.y, p_id, _ranking_scores(picks.score),
                  box_px, iou_threshold)


def evaluate(truth: Picks, picks: Picks, box_px: float, *, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
             threshold: float | None = None, micrographs: Iterable[str] | None = None) -> EvaluationReport:
    """Score ``picks`` against ``truth`` overall (pooled) and per micrograph.

    Parameters
    ----------
    truth : Picks
        True particle centres (scores ignored).
    picks : Picks
        Picker output with scores (picks without a score rank above every scored pick and are kept at
        any threshold, as in `Picks.above`).
    box_px : float
        Side of the square box around every true and picked centre, in micrograph pixels (usually the
        particle diameter in pixels).
    iou_threshold : float
        A pick is a true positive when IoU > this with an unmatched true box (thesis: 0.6).
    threshold : float, optional
        Score threshold for precision, recall, F1 and the counts; None uses every pick.
    micrographs : iterable of str, optional
        The micrographs that make up the evaluation (names matched by `micrograph_key`). Default: the
        micrographs that have true particles. Picks on a listed micrograph without true particles are
        false positives; picks and true particles on micrographs outside the set are left out and
        counted in ``skipped_picks`` / ``skipped_truth``.

    Returns
    -------
    EvaluationReport
        Pooled over the evaluated micrographs, with ``per_micrograph`` reports keyed by micrograph key.
    """
    _check_box(box_px, iou_threshold)
    t_keys, p_keys = _keys(truth.micrograph), _keys(picks.micrograph)
    if micrographs is None:
        selected = list(dict.fromkeys(t_keys.tolist()))
    else:
        selected = list(dict.fromkeys(micrograph_key(m) for m in micrographs))
    index = {key: i for i, key in enumerate(selected)}
    t_id = np.array([index.get(k, -1) for k in t_keys.tolist()], dtype=np.int64)
    p_id = np.array([index.get(k, -1) for k in p_keys.tolist()], dtype=np.int64)
    skipped_picks = dict(Counter(p_keys[p_id < 0].tolist()))
    skipped_truth = dict(Counter(t_keys[t_id < 0].tolist()))
    if skipped_picks:
        log.info("%d picks on %d micrographs outside the evaluation were left out",
                 sum(skipped_picks.values()), len(skipped_picks))

    t_keep, p_keep = t_id >= 0, p_id >= 0
    tx, ty, t_id = truth.x[t_keep], truth.y[t_keep], t_id[t_keep]
    px, py, p_id = picks.x[p_keep], picks.y[p_keep], p_id[p_keep]
    score = _ranking_scores(picks.score[p_keep])
    matched = _match(tx, ty, t_id, px, py, p_id, score, box_px, iou_threshold)
    offset = np.full(len(px), np.nan)
    hit = matched >= 0
    offset[hit] = np.hypot(px[hit] - tx[matched[hit]], py[hit] - ty[matched[hit]])

    n_truth_per = np.bincount(t_id, minlength=len(selected))
    per: dict[str, EvaluationReport] = {}
    order = np.argsort(p_id, kind="stable")
    bounds = np.searchsorted(p_id[order], np.arange(len(selected) + 1))
    for i, key in enumerate(selected):
        rows = order[bounds[i]:bounds[i + 1]]
        per[key] = _report(score[rows], hit[rows], offset[rows], int(n_truth_per[i]), threshold, box_px,
                           iou_threshold, 1)
    overall = _report(score, hit, offset, len(tx), threshold, box_px, iou_threshold, len(selected))
    return replace(overall, per_micrograph=per, skipped_picks=skipped_picks, skipped_truth=skipped_truth)


def threshold_at_precision(truth: Picks, picks: Picks, box_px: float, precision: float = 0.8,
                           iou_threshold: float = DEFAULT_IOU_THRESHOLD, *,
                           micrographs: Iterable[str] | None = None) -> float:
    """The thesis calibration rule: the lowest score threshold whose precision is >= ``precision``.

    Precision is pooled over the micrographs (see `evaluate`). When no threshold reaches the requested
    precision, the lowest threshold with the highest precision reached is returned and a warning is
    logged, so that a calibration run never fails outright on a hard dataset.

    Raises
    ------
    ValueError
        When there are no picks or no true particles to calibrate on.
    """
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"precision must be in (0, 1], got {precision}")
    report = evaluate(truth, picks, box_px, iou_threshold=iou_threshold, micrographs=micrographs)
    if report.n_truth == 0:
        raise ValueError("cannot calibrate a threshold: there are no true particles")
    curves = report.curves
    if len(curves.thresholds) == 0:
        raise ValueError("cannot calibrate a threshold: there are no picks on the evaluated micrographs")
    ok = np.flatnonzero(curves.precision >= precision)
    if len(ok):
        return float(curves.thresholds[ok[-1]])
    best = np.flatnonzero(curves.precision == curves.precision.max())[-1]
    log.warning("no threshold reaches precision %.2f (best %.3f at %.4g); using that threshold",
                precision, curves.precision[best], curves.thresholds[best])
    return float(curves.thresholds[best])


# --- reading truth and picks for evaluation --------------------------------------------------------------

@dataclass(frozen=True)
class CoordinateSet:
    """Coordinates read for evaluation and the micrographs they cover.

    ``micrographs`` (keys) includes micrographs whose per-micrograph file holds no particles, which
    `Picks` alone cannot carry: an empty truth file says "this micrograph has no particles".
    """

    picks: Picks
    micrographs: list[str]


def load_coordinates(path: str | os.PathLike, *, format: str | None = None, flip_y: bool = False,
                     image_height: int | Mapping[str, int] | None = None,
                     missing_height: str = "error") -> CoordinateSet:
    """Read a coordinate file or a folder of per-micrograph files in any format `hydrapick.io` reads.

    Parameters
    ----------
    path : path
        A file (``.star``, ``.box``, ``.cbox``, ``.txt`` Topaz, ``.cs``), a folder of such files, or a
        RELION job folder holding ``autopick.star``.
    format : str, optional
        Coordinate format for every file (default: from each extension).
    flip_y : bool
        Mirror y (``y -> height - 1 - y``) for tools that count y up from the bottom row.
    image_height : int or mapping of micrograph key -> int, optional
        Micrograph height(s) in pixels for ``flip_y``; a mapping flips each micrograph with its own
        height (cryoSPARC files carry their shapes and need none).
    missing_height : {"error", "drop"}
        With a mapping of heights: what to do with coordinates on a micrograph it lacks (see
        `flip_y_per_micrograph`).

    Raises
    ------
    hydrapick.io.FormatError
        Unreadable file (the message names it).
    ValueError
        ``flip_y`` without the height of a micrograph that has coordinates.
    """
    from . import io

    path = Path(path)
    file_height = image_height if isinstance(image_height, int) else None
    read_flip = flip_y and not isinstance(image_height, Mapping)
    covered: list[str] = []
    if path.is_dir() and not (path / "autopick.star").exists():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in COORDINATE_SUFFIXES)
        if not files:
            raise io.FormatError(f"{path}: the folder holds no coordinate files "
                                 f"({', '.join(COORDINATE_SUFFIXES)})", path)
        parts = [io.read_coordinates(p, format, flip_y=read_flip, image_height=file_height) for p in files]
        picks = Picks.concat(parts)
        covered = [micrograph_key(p.name) for p, part in zip(files, parts, strict=True) if len(part) == 0]
    elif path.is_dir():
        picks = io.read_coordinates(path, "relion", flip_y=read_flip, image_height=file_height)
    else:
        picks = io.read_coordinates(path, format, flip_y=read_flip, image_height=file_height)
    if flip_y and isinstance(image_height, Mapping):
        picks = flip_y_per_micrograph(picks, image_height, missing=missing_height)
    keys = list(dict.fromkeys(_keys(picks.micrograph).tolist() + covered))
    return CoordinateSet(picks, keys)


def flip_y_per_micrograph(picks: Picks, heights: Mapping[str, int], *, missing: str = "error") -> Picks:
    """Mirror y on each micrograph with its own height (``heights`` keyed by `micrograph_key`).

    ``missing="error"`` raises ValueError when a micrograph with coordinates has no height;
    ``missing="drop"`` leaves its coordinates out (logged as a warning).
    """
    if missing not in ("error", "drop"):
        raise ValueError(f"missing must be 'error' or 'drop', got {missing!r}")
    heights = {micrograph_key(k): v for k, v in heights.items()}
    keys = _keys(picks.micrograph)
    absent = sorted(set(keys.tolist()) - set(heights))
    if absent and missing == "drop":
        known = np.array([k in heights for k in keys.tolist()], dtype=bool)
        log.warning("left out %d coordinates on %d micrographs without a known height (cannot flip y): %s",
                    int((~known).sum()), len(absent), _some(absent))
        picks, keys = picks[known], keys[known]
    elif absent:
        raise ValueError(f"flip_y needs the height of micrograph {absent[0]!r}"
                         + (f" and {len(absent) - 1} more" if len(absent) > 1 else "")
                         + "; no micrograph of that name was found")
    h = np.array([heights[k] for k in keys.tolist()], dtype=np.float64)
    return Picks(picks.micrograph.copy(), picks.x.copy(), h - 1 - picks.y, picks.score.copy(),
                 picks.diameter_px.copy())


def find_micrographs(folder: str | os.PathLike) -> dict[str, Path]:
    """MRC files in a folder (or matching a glob pattern), keyed by `micrograph_key`."""
    folder = Path(folder)
    if folder.is_dir():
        files = sorted(p for p in folder.iterdir() if p.name.lower().endswith(MICROGRAPH_SUFFIXES))
    else:
        files = sorted(Path(p) for p in glob.glob(str(folder)))
    files = [p for p in files if p.is_file()]
    if not files:
        raise FileNotFoundError(f"{folder}: no micrographs ({', '.join(MICROGRAPH_SUFFIXES)}) found")
    return {micrograph_key(p.name): p for p in files}


# --- internals ---------------------------------------------------------------------------------------------

def _check_box(box_px: float, iou_threshold: float) -> None:
    if not (math.isfinite(box_px) and box_px > 0):
        raise ValueError(f"box_px must be a positive number of pixels, got {box_px}")
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")


def _keys(names: np.ndarray) -> np.ndarray:
    """`micrograph_key` of every name, computed once per distinct name (thousands of picks share one)."""
    if len(names) == 0:
        return np.zeros(0, dtype=object)
    unique, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    return np.array([micrograph_key(u) for u in unique.tolist()], dtype=object)[inverse]


def _some(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


def _ranking_scores(score: np.ndarray) -> np.ndarray:
    # Unscored picks are kept at any threshold by Picks.above; ranking them first keeps that meaning.
    return np.where(np.isnan(score), np.inf, score).astype(np.float64)


def _match(tx, ty, t_id, px, py, p_id, score, box_px: float, iou_threshold: float) -> np.ndarray:
    """Truth index matched by each pick (-1 for none); ids < 0 never match."""
    matched = np.full(len(px), -1, dtype=np.int64)
    if len(tx) == 0 or len(px) == 0:
        return matched
    # Separate micrographs along a third axis further apart than any box can reach, so one KD-tree
    # query finds the overlapping (Chebyshev distance < box) pairs of all micrographs at once.
    spread = 4.0 * box_px + 1.0
    p_tree = cKDTree(np.column_stack([px, py, p_id * spread]))
    t_tree = cKDTree(np.column_stack([tx, ty, t_id * spread]))
    pairs = p_tree.sparse_distance_matrix(t_tree, box_px, p=np.inf, output_type="ndarray")
    i, j = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    valid = (p_id[i] >= 0) & (t_id[j] >= 0)
    i, j = i[valid], j[valid]
    iou = box_iou(px[i] - tx[j], py[i] - ty[j], box_px)
    keep = iou > iou_threshold
    i, j, iou = i[keep], j[keep], iou[keep]
    if len(i) == 0:
        return matched
    rank = np.empty(len(px), dtype=np.int64)
    rank[np.argsort(-score, kind="stable")] = np.arange(len(px))
    # Candidate pairs in processing order: by pick rank, then the best-overlapping truth first.
    order = np.lexsort((j, -iou, rank[i]))
    pick_done = [False] * len(px)
    truth_done = [False] * len(tx)
    for a, b in zip(i[order].tolist(), j[order].tolist(), strict=True):
        if pick_done[a] or truth_done[b]:
            continue
        pick_done[a] = truth_done[b] = True
        matched[a] = b
    return matched


def _curves(score: np.ndarray, hit: np.ndarray, n_truth: int) -> Curves:
    order = np.argsort(-score, kind="stable")
    s, h = score[order], hit[order]
    n = len(s)
    # Keep the last pick of every run of equal scores: a threshold keeps ties together.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True]) if n else np.zeros(0, dtype=np.int64)
    n_matched = np.cumsum(h, dtype=np.int64)[last]
    n_picks = last + 1
    precision = n_matched / n_picks
    recall = n_matched / n_truth if n_truth else np.full(len(last), np.nan)
    n_fp_total = n - int(h.sum())
    fp_rate = (n_picks - n_matched) / n_fp_total if n_fp_total else np.full(len(last), np.nan)
    fpr = np.r_[0.0, fp_rate, 1.0]
    tpr = np.r_[0.0, recall, 1.0] if n_truth else np.full(len(last) + 2, np.nan)
    return Curves(s[last], precision, recall, n_picks, n_matched, fpr, tpr)


def _report(score, hit, offset, n_truth: int, threshold: float | None, box_px: float, iou_threshold: float,
            n_micrographs: int) -> EvaluationReport:
    curves = _curves(score, hit, n_truth)
    n_total = len(score)
    nan = float("nan")

    if n_truth and len(curves.thresholds):
        envelope = np.maximum.accumulate(curves.precision[::-1])[::-1]
        ap = float(np.sum(np.diff(np.r_[0.0, curves.recall]) * envelope))
    else:
        ap = 0.0 if n_truth else nan
    n_fp_total = n_total - int(hit.sum())
    auroc = float(np.trapezoid(curves.tpr, curves.fpr)) if (n_truth and n_fp_total) else nan

    if len(curves.thresholds):
        f1_curve = 2.0 * curves.n_matched / (curves.n_picks + n_truth)
        best = int(np.argmax(f1_curve))
        best_f1, best_threshold = float(f1_curve[best]), float(curves.thresholds[best])
        reach = curves.precision >= 0.9
        recall_at_09 = float(curves.recall[reach].max()) if reach.any() else (0.0 if n_truth else nan)
    else:
        best_f1, best_threshold = (0.0 if n_truth else nan), nan
        recall_at_09 = 0.0 if n_truth else nan

    kept = np.ones(n_total, dtype=bool) if threshold is None else score >= threshold
    n_picks = int(kept.sum())
    n_matched = int(hit[kept].sum())
    precision = n_matched / n_picks if n_picks else nan
    recall = n_matched / n_truth if n_truth else nan
    f1 = 2.0 * n_matched / (n_picks + n_truth) if (n_picks + n_truth) else nan
    offsets = offset[kept & hit]
    return EvaluationReport(
        ap=ap, auroc=auroc, precision=precision, recall=recall, f1=f1,
        threshold=None if threshold is None else float(threshold),
        best_f1=best_f1, best_f1_threshold=best_threshold, recall_at_precision_0_9=recall_at_09,
        n_truth=int(n_truth), n_picks=n_picks, n_matched=n_matched, n_picks_total=int(n_total),
        mean_offset_px=float(offsets.mean()) if len(offsets) else nan,
        box_px=float(box_px), iou_threshold=float(iou_threshold), n_micrographs=int(n_micrographs),
        curves=curves,
    )


def _json_float(value):
    if value is None:
        return None
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    value = float(value)
    return value if math.isfinite(value) else None


def write_report_json(path: str | os.PathLike, reports: Mapping[str, EvaluationReport], *,
                      curves: bool = False, metadata: Mapping | None = None) -> Path:
    """Write reports of one or more pickers as JSON, atomically.

    The file holds ``metadata`` (e.g. truth path, box) and ``pickers``: label -> `EvaluationReport.to_dict`.
    """
    path = Path(path)
    document = {**(dict(metadata) if metadata else {}),
                "pickers": {label: r.to_dict(curves=curves) for label, r in reports.items()}}
    text = json.dumps(document, indent=1, allow_nan=False) + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
