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

import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import replace

import numpy as np
from scipy.spatial import cKDTree

from ..picks import Picks, micrograph_key
from .report import Curves, EvaluationReport

log = logging.getLogger(__name__)

DEFAULT_IOU_THRESHOLD = 0.6


def box_iou(dx: np.ndarray, dy: np.ndarray, box_px: float) -> np.ndarray:
    """IoU of two axis-aligned squares of side ``box_px`` whose centres differ by (dx, dy) pixels."""
    overlap = np.clip(box_px - np.abs(dx), 0.0, None) * np.clip(box_px - np.abs(dy), 0.0, None)
    return overlap / (2.0 * box_px * box_px - overlap)


def match_picks(truth: Picks, picks: Picks, box_px: float | Mapping[str, float], *,
                iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> np.ndarray:
    """Greedy thesis matching of picks to true particles, micrograph by micrograph.

    Parameters
    ----------
    truth, picks : Picks
        Micrographs are matched by `micrograph_key`.
    box_px : float or mapping of micrograph name -> float
        Box side in pixels for both truth and picks (per micrograph when the pixel size varies).
    iou_threshold : float
        A pick matches when IoU > this.

    Returns
    -------
    (len(picks),) int64
        Index into ``truth`` of the particle each pick matched, -1 for a false positive.
    """
    t_keys, p_keys = micrograph_keys(truth.micrograph), micrograph_keys(picks.micrograph)
    selected = list(dict.fromkeys(t_keys.tolist()))
    boxes = _boxes(box_px, selected, iou_threshold)
    index = {key: i for i, key in enumerate(selected)}
    t_id = np.array([index[k] for k in t_keys.tolist()], dtype=np.int64)
    p_id = np.array([index.get(k, -1) for k in p_keys.tolist()], dtype=np.int64)
    return _match(truth.x, truth.y, t_id, picks.x, picks.y, p_id, _ranking_scores(picks.score),
                  boxes, iou_threshold)


def evaluate(truth: Picks, picks: Picks, box_px: float | Mapping[str, float], *,
             iou_threshold: float = DEFAULT_IOU_THRESHOLD, threshold: float | None = None,
             micrographs: Iterable[str] | None = None) -> EvaluationReport:
    """Score ``picks`` against ``truth`` overall (pooled) and per micrograph.

    Parameters
    ----------
    truth : Picks
        True particle centres (scores ignored).
    picks : Picks
        Picker output with scores (picks without a score rank above every scored pick and are kept at
        any threshold, as in `Picks.above`).
    box_px : float or mapping of micrograph name -> float
        Side of the square box around every true and picked centre, in micrograph pixels (usually the
        particle diameter in pixels); a mapping gives each evaluated micrograph its own box (micrographs
        of different pixel sizes). The overall report's ``box_px`` is then NaN unless all are equal.
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
    t_keys, p_keys = micrograph_keys(truth.micrograph), micrograph_keys(picks.micrograph)
    if micrographs is None:
        selected = list(dict.fromkeys(t_keys.tolist()))
    else:
        selected = list(dict.fromkeys(micrograph_key(m) for m in micrographs))
    boxes = _boxes(box_px, selected, iou_threshold)
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
    matched = _match(tx, ty, t_id, px, py, p_id, score, boxes, iou_threshold)
    offset = np.full(len(px), np.nan)
    hit = matched >= 0
    offset[hit] = np.hypot(px[hit] - tx[matched[hit]], py[hit] - ty[matched[hit]])

    n_truth_per = np.bincount(t_id, minlength=len(selected))
    per = dict(zip(selected, _reports(p_id, len(selected), score, hit, offset, n_truth_per, threshold, boxes,
                                      iou_threshold, 1), strict=True))
    common = boxes[0] if len(boxes) and np.all(boxes == boxes[0]) else np.nan
    (overall,) = _reports(np.zeros(len(px), dtype=np.int64), 1, score, hit, offset, np.array([len(tx)]),
                          threshold, np.array([common]), iou_threshold, len(selected))
    return replace(overall, per_micrograph=per, skipped_picks=skipped_picks, skipped_truth=skipped_truth)


def threshold_at_precision(truth: Picks, picks: Picks, box_px: float | Mapping[str, float],
                           precision: float = 0.8,
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


def calibrate_threshold(truth: Picks, picks: Picks, box_px: float | Mapping[str, float], rule: str = "f1",
                        precision: float = 0.8, iou_threshold: float = DEFAULT_IOU_THRESHOLD, *,
                        micrographs: Iterable[str] | None = None) -> float:
    """A score threshold from labelled data: ``rule="f1"``, the threshold of the best F1 (pooled over the
    micrographs); ``rule="precision"``, the thesis rule of `threshold_at_precision`.

    Raises
    ------
    ValueError
        Unknown rule, or no picks or no true particles to calibrate on.
    """
    if rule == "precision":
        return threshold_at_precision(truth, picks, box_px, precision, iou_threshold, micrographs=micrographs)
    if rule != "f1":
        raise ValueError(f"unknown calibration rule {rule!r} (f1 or precision)")
    report = evaluate(truth, picks, box_px, iou_threshold=iou_threshold, micrographs=micrographs)
    if report.n_truth == 0:
        raise ValueError("cannot calibrate a threshold: there are no true particles")
    if len(report.curves.thresholds) == 0:
        raise ValueError("cannot calibrate a threshold: there are no picks on the evaluated micrographs")
    return float(report.best_f1_threshold)


# --- internals ---------------------------------------------------------------------------------------------

def _boxes(box_px: float | Mapping[str, float], selected: list[str], iou_threshold: float) -> np.ndarray:
    """(len(selected),) box side per evaluated micrograph, checked."""
    if not 0.0 <= iou_threshold < 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1), got {iou_threshold}")
    if isinstance(box_px, Mapping):
        by_key = {micrograph_key(k): v for k, v in box_px.items()}
        missing = [m for m in selected if m not in by_key]
        if missing:
            raise ValueError(f"no box size for micrograph {missing[0]!r}"
                             + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
        boxes = np.array([by_key[m] for m in selected], dtype=np.float64)
    else:
        boxes = np.array([box_px], dtype=np.float64)
    bad = ~(np.isfinite(boxes) & (boxes > 0))
    if bad.any():
        raise ValueError(f"box_px must be a positive number of pixels, got {boxes[bad][0]}")
    return boxes if isinstance(box_px, Mapping) else np.full(len(selected), boxes[0])


def micrograph_keys(names: np.ndarray) -> np.ndarray:
    """`micrograph_key` of every name, computed once per distinct name (thousands of picks share one)."""
    if len(names) == 0:
        return np.zeros(0, dtype=object)
    unique, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
    return np.array([micrograph_key(u) for u in unique.tolist()], dtype=object)[inverse]


def _ranking_scores(score: np.ndarray) -> np.ndarray:
    # Unscored picks are kept at any threshold by Picks.above; ranking them first keeps that meaning.
    return np.where(np.isnan(score), np.inf, score).astype(np.float64)


def _match(tx, ty, t_id, px, py, p_id, score, boxes: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Truth index matched by each pick (-1 for none); ids < 0 never match. ``boxes``: side per id."""
    matched = np.full(len(px), -1, dtype=np.int64)
    if len(tx) == 0 or len(px) == 0:
        return matched
    box_px = float(boxes.max())
    # Separate micrographs along a third axis further apart than any box can reach, so one KD-tree
    # query finds the overlapping (Chebyshev distance < box) pairs of all micrographs at once.
    spread = 4.0 * box_px + 1.0
    p_tree = cKDTree(np.column_stack([px, py, p_id * spread]))
    t_tree = cKDTree(np.column_stack([tx, ty, t_id * spread]))
    pairs = p_tree.sparse_distance_matrix(t_tree, box_px, p=np.inf, output_type="ndarray")
    i, j = pairs["i"].astype(np.int64), pairs["j"].astype(np.int64)
    valid = (p_id[i] >= 0) & (t_id[j] >= 0)
    i, j = i[valid], j[valid]
    iou = box_iou(px[i] - tx[j], py[i] - ty[j], boxes[t_id[j]])
    keep = iou > iou_threshold
    i, j, iou = i[keep], j[keep], iou[keep]
    if len(i) == 0:
        return matched
    # A pick with a single candidate particle that no other pick overlaps cannot be contested: match it
    # directly, and leave only the contested pairs (crowded particles, duplicates) to the greedy loop.
    alone = (np.bincount(i, minlength=len(px))[i] == 1) & (np.bincount(j, minlength=len(tx))[j] == 1)
    matched[i[alone]] = j[alone]
    i, j, iou = i[~alone], j[~alone], iou[~alone]
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


def _reports(group: np.ndarray, n_groups: int, score: np.ndarray, hit: np.ndarray, offset: np.ndarray,
             n_truth: np.ndarray, threshold: float | None, boxes: np.ndarray, iou_threshold: float,
             n_micrographs: int) -> list[EvaluationReport]:
    """One report per group (micrograph), computed for all groups at once.

    Parameters
    ----------
    group : (n,) int64 in [0, n_groups)
        Group of each pick; each group is ranked on its own.
    score, hit, offset : (n,)
        Ranking score, matched flag and distance to the matched particle (NaN when unmatched).
    n_truth : (n_groups,) int64
        True particles per group.
    """
    n_truth = np.asarray(n_truth, dtype=np.int64)
    # Picks by group, then by descending score; ties keep file order (lexsort is stable).
    order = np.lexsort((-score, group))
    g, s, h = group[order], score[order], hit[order]
    n = len(g)
    starts = np.searchsorted(g, np.arange(n_groups))
    n_picks_total = np.bincount(g, minlength=n_groups)
    n_hits_total = np.bincount(g, weights=h, minlength=n_groups).astype(np.int64)

    cum = np.cumsum(h, dtype=np.int64)
    before = np.where(starts > 0, cum[np.maximum(starts - 1, 0)], 0) if n else np.zeros(n_groups, np.int64)
    # An operating point per run of equal scores within a group: a threshold keeps ties together.
    last = np.ones(n, dtype=bool)
    if n:
        last[:-1] = (s[1:] != s[:-1]) | (g[1:] != g[:-1])
    pts = np.flatnonzero(last)
    pg = g[pts]
    tp = cum[pts] - before[pg]
    kept = pts - starts[pg] + 1
    truth_pg = n_truth[pg]
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = tp / kept
        recall = np.where(truth_pg > 0, tp / truth_pg, np.nan)
        fp_total = (n_picks_total - n_hits_total)[pg]
        fpr = np.where(fp_total > 0, (kept - tp) / fp_total, np.nan)
    first = np.ones(len(pts), dtype=bool)
    first[1:] = pg[1:] != pg[:-1]
    prev_recall = np.where(first, 0.0, np.roll(recall, 1))
    prev_fpr = np.where(first, 0.0, np.roll(fpr, 1))
    bounds = np.searchsorted(pg, np.arange(n_groups + 1))
    has_pts = bounds[1:] > bounds[:-1]

    # AP, all-point interpolation: precision envelope from the right within each group. Adding 2 per
    # group (precision <= 1) makes one running maximum over the reversed array restart at each group.
    lift = 2.0 * (n_groups - 1 - pg)
    envelope = np.maximum.accumulate((precision + lift)[::-1])[::-1] - lift
    ap = np.bincount(pg, weights=(recall - prev_recall) * envelope, minlength=n_groups).astype(np.float64)
    ap = np.where(n_truth > 0, ap, np.nan)

    # AUROC: trapezoids from (0, 0) through every point, then to (1, 1) (the missed particles).
    area = np.bincount(pg, weights=(fpr - prev_fpr) * (recall + prev_recall) / 2.0,
                       minlength=n_groups).astype(np.float64)
    last_pt = bounds[1:][has_pts] - 1
    area[has_pts] += (1.0 - fpr[last_pt]) * (1.0 + recall[last_pt]) / 2.0
    defined = has_pts & (n_truth > 0) & (n_picks_total > n_hits_total)
    auroc = np.where(defined, area, np.nan)

    # Best F1: first (highest-threshold) maximum within each group.
    f1_curve = 2.0 * tp / (kept + truth_pg)
    by_f1 = np.lexsort((np.arange(len(pts)), -f1_curve, pg))
    best_at = by_f1[bounds[:-1][has_pts]]
    best_f1 = np.where(n_truth > 0, 0.0, np.nan)
    best_threshold = np.full(n_groups, np.nan)
    best_f1[has_pts] = f1_curve[best_at]
    best_threshold[has_pts] = s[pts[best_at]]

    reach = np.where(precision >= 0.9, recall, -1.0)
    r09 = np.full(n_groups, -1.0)
    if len(pts):
        r09[has_pts] = np.maximum.reduceat(reach, bounds[:-1][has_pts])
    r09 = np.where(n_truth > 0, np.maximum(r09, 0.0), np.nan)

    sel = np.ones(n, dtype=bool) if threshold is None else s >= threshold
    n_sel = np.bincount(g[sel], minlength=n_groups)
    hits_sel = sel & h
    n_hit_sel = np.bincount(g[hits_sel], minlength=n_groups)
    offset_sum = np.bincount(g[hits_sel], weights=offset[order][hits_sel], minlength=n_groups)

    reports = []
    for i in range(n_groups):
        a, b = bounds[i], bounds[i + 1]
        nt, ns, nh = int(n_truth[i]), int(n_sel[i]), int(n_hit_sel[i])
        curves = Curves(thresholds=s[pts[a:b]], precision=precision[a:b], recall=recall[a:b],
                        n_picks=kept[a:b], n_matched=tp[a:b],
                        fpr=np.concatenate(([0.0], fpr[a:b], [1.0])),
                        tpr=np.concatenate(([0.0], recall[a:b], [1.0])) if nt else np.full(b - a + 2, np.nan))
        reports.append(EvaluationReport(
            ap=float(ap[i]) if (nt == 0 or b > a) else 0.0, auroc=float(auroc[i]),
            precision=nh / ns if ns else math.nan, recall=nh / nt if nt else math.nan,
            f1=2.0 * nh / (ns + nt) if (ns + nt) else math.nan,
            threshold=None if threshold is None else float(threshold),
            best_f1=float(best_f1[i]), best_f1_threshold=float(best_threshold[i]),
            recall_at_precision_0_9=float(r09[i]), n_truth=nt, n_picks=ns, n_matched=nh,
            n_picks_total=int(n_picks_total[i]), mean_offset_px=offset_sum[i] / nh if nh else math.nan,
            box_px=float(boxes[i]), iou_threshold=float(iou_threshold), n_micrographs=n_micrographs,
            curves=curves,
        ))
    return reports


