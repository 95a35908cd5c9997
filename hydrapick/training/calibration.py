"""Score thresholds from labelled validation data: one rule and one report for training and fine-tuning.

A head's threshold is chosen on detections of labelled micrographs it was not trained on, by the rule
of ``TrainConfig.calibration`` / ``FinetuneConfig.calibration`` (best F1, or the thesis rule: the lowest
threshold with precision >= ``calibration_precision``), and reported with the AP, precision and recall
it gives there.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..config import FALLBACK_THRESHOLD
from ..model import GENERIC_HEAD
from ..picks import Picks
from .validation import HeadValidation

log = logging.getLogger(__name__)


def calibration_report(truth: Picks, picks: Picks, micrographs: Sequence[str], box_px: float, rule: str,
                       min_precision: float) -> dict[str, Any]:
    """The threshold of ``picks`` against ``truth`` by ``rule``, with AP, precision and recall at it.

    Returns ``{"threshold", "rule", "ap", "precision", "recall", "n_truth"}`` (None for undefined values).
    """
    from ..evaluation import calibrate_threshold, evaluate

    threshold = calibrate_threshold(truth, picks, box_px, rule, min_precision, micrographs=micrographs)
    at = evaluate(truth, picks, box_px, threshold=threshold, micrographs=micrographs)
    return {"threshold": threshold, "rule": rule, "ap": finite_or_none(at.ap),
            "precision": finite_or_none(at.precision), "recall": finite_or_none(at.recall),
            "n_truth": int(at.n_truth)}


def sparse_calibration_report(truth: Picks, picks: Picks, micrographs: Sequence[str], box_px: float,
                              rule: str, min_precision: float, expected_per_micrograph: float,
                              ) -> dict[str, Any]:
    """`calibration_report` when ``truth`` holds only a random subset of the particles (sparse labels).

    A pick on an unlabelled particle is not a false positive, so the precision measured against sparse
    labels is too low by about the labelled fraction, and the rules would pick too high a threshold.
    Recall against a random subset of the particles estimates the recall against all of them, and the
    expected number of particles turns it into a precision: at threshold t, with ``n(t)`` picks kept,
    precision(t) ~ recall(t) x expected particles / n(t) (at most 1). The rule then applies to these
    estimated curves. No AP is reported: against sparse labels it is not the AP against all particles.

    Returns ``{"threshold", "rule", "ap": None, "precision" (estimated), "recall", "n_truth",
    "expected_particles"}``.
    """
    from ..evaluation import evaluate

    report = evaluate(truth, picks, box_px, micrographs=micrographs)
    curves = report.curves
    if report.n_truth == 0 or len(curves.thresholds) == 0:
        raise ValueError("cannot calibrate a threshold: no labelled particles or no picks")
    expected = expected_per_micrograph * len(set(micrographs))
    precision = np.minimum(1.0, curves.recall * expected / np.maximum(curves.n_picks, 1))
    if rule == "precision":
        ok = np.flatnonzero(precision >= min_precision)
        k = int(ok[-1]) if len(ok) else int(np.argmax(precision))
    else:
        f1 = 2 * precision * curves.recall / np.maximum(precision + curves.recall, 1e-12)
        k = int(np.argmax(f1))
    return {"threshold": float(curves.thresholds[k]), "rule": rule, "ap": None,
            "precision": finite_or_none(precision[k]), "recall": finite_or_none(curves.recall[k]),
            "n_truth": int(report.n_truth), "expected_particles": float(expected_per_micrograph)}


def calibrate_heads(validations: Mapping[str, HeadValidation], heads: Sequence[str], box_px: float,
                    rule: str, min_precision: float) -> tuple[dict[str, float], dict[str, Any]]:
    """Threshold and report of each of ``heads`` from its pooled validation detections.

    A head without validation particles or detections takes the generic head's threshold when that one
    was calibrated (list the generic head first), else `hydrapick.config.FALLBACK_THRESHOLD`.
    """
    thresholds: dict[str, float] = {}
    report: dict[str, Any] = {}
    for head in heads:
        hv = validations.get(head)
        truth = Picks.concat(hv.truth) if hv else Picks.empty()
        picks = Picks.concat(hv.picks) if hv else Picks.empty()
        if hv is None or not len(truth) or not len(picks):
            fallback = thresholds.get(GENERIC_HEAD, FALLBACK_THRESHOLD)
            log.warning("head %s: no validation particles to calibrate on; threshold %.3f (%s)", head,
                        fallback, "generic head's" if GENERIC_HEAD in thresholds else "default")
            thresholds[head] = fallback
            report[head] = {"threshold": fallback, "source": "fallback"}
            continue
        found = calibration_report(truth, picks, hv.names, box_px, rule, min_precision)
        thresholds[head] = found["threshold"]
        report[head] = {"threshold": found["threshold"], "source": "validation", **found,
                        "n_tiles": len(hv.names)}
    return thresholds, report


def finite_or_none(value: float | None) -> float | None:
    """``value`` as a float, or None when it is None, NaN or infinite (JSON has no NaN)."""
    return float(value) if value is not None and math.isfinite(value) else None
