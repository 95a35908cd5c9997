"""The evaluation report: `EvaluationReport` and its `Curves`, and their JSON file.

`hydrapick.evaluation.evaluate` returns an `EvaluationReport` per picker; `write_report_json` writes
those of one or more pickers to one JSON file (NaN and infinities become null).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..io.atomic import write_text


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
    write_text(path, text)
    return path
