"""Scoring picks against ground truth.

- `metrics`: matching at IoU, AP, AUROC, PR/ROC curves, F1 and threshold calibration (`evaluate`,
  `calibrate_threshold`), on `Picks` in memory.
- `coordinates`: reading truth and picks for scoring (any format), y flips, edges, micrograph files.
- `files`: `evaluate_picks_files`, everything ``hydrapick evaluate`` does, from files to reports.
- `report`: `EvaluationReport`, its `Curves` and the JSON report.
- `plots`: PR/ROC figures and overlays (matplotlib is imported only when drawing).
"""

from .coordinates import (
    CoordinateSet,
    drop_near_edge,
    find_micrographs,
    flip_y_per_micrograph,
    load_coordinates,
    merge_coincident,
)
from .files import EvaluationResult, evaluate_picks_files
from .metrics import (
    DEFAULT_IOU_THRESHOLD,
    box_iou,
    calibrate_threshold,
    evaluate,
    match_picks,
    micrograph_keys,
    threshold_at_precision,
)
from .report import Curves, EvaluationReport, write_report_json

__all__ = [
    "DEFAULT_IOU_THRESHOLD", "CoordinateSet", "Curves", "EvaluationReport", "EvaluationResult", "box_iou",
    "calibrate_threshold", "drop_near_edge", "evaluate", "evaluate_picks_files", "find_micrographs",
    "flip_y_per_micrograph", "load_coordinates", "match_picks", "merge_coincident", "micrograph_keys",
    "threshold_at_precision", "write_report_json",
]
