"""Figures for evaluation: precision-recall and ROC curves, and pick overlays on micrographs.

matplotlib is imported only when a figure is drawn, and figures are rendered with the Agg canvas
directly (no pyplot), so importing hydrapick never selects or changes a matplotlib backend. Every
figure is written atomically (temporary file, then rename) as PNG.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..picks import Picks
from .report import EvaluationReport

log = logging.getLogger(__name__)

TRUTH_COLOUR = "#22dd22"
PICK_COLOUR = "#ff2020"


def pr_curves(reports: Mapping[str, EvaluationReport], path: str | os.PathLike, *, title: str = "") -> Path:
    """Precision-recall curves of one or more pickers on one figure (legend: label and AP).

    Parameters
    ----------
    reports : mapping of label -> EvaluationReport
        One curve per picker, in mapping order.
    path : path
        PNG file to write.
    """
    fig, ax = _figure((5.5, 5.0))
    for label, report in reports.items():
        c = report.curves
        # Start at recall 0 with the first point's precision so the curve reads from the left edge.
        recall = np.r_[0.0, c.recall] if len(c.recall) else c.recall
        precision = np.r_[c.precision[:1], c.precision]
        ax.plot(recall, precision, lw=1.6, label=f"{label} (AP {_fmt(report.ap)})")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    _finish_curve_axes(ax, title or "Precision-recall")
    return _save(fig, path)


def roc_curves(reports: Mapping[str, EvaluationReport], path: str | os.PathLike, *, title: str = "") -> Path:
    """ROC curves (false-positive pick fraction vs recall) of one or more pickers; legend gives AUROC.

    See `EvaluationReport` for how ROC is defined for detection (unmatched particles rank last).
    """
    fig, ax = _figure((5.5, 5.0))
    for label, report in reports.items():
        c = report.curves
        ax.plot(c.fpr, c.tpr, lw=1.6, label=f"{label} (AUROC {_fmt(report.auroc)})")
    ax.plot([0, 1], [0, 1], color="0.7", lw=0.8, ls="--")
    ax.set_xlabel("false-positive rate (false picks kept / all false picks)")
    ax.set_ylabel("true-positive rate (recall)")
    _finish_curve_axes(ax, title or "ROC")
    return _save(fig, path)


def overlay(image: np.ndarray, path: str | os.PathLike, *, picks: Picks | None = None,
            truth: Picks | None = None, box_px: float, title: str = "", threshold: float | None = None,
            max_size_px: int = 800, clip_percentiles: tuple[float, float] = (1.0, 99.0),
            line_width: float = 1.2) -> Path:
    """Draw truth (green) and picks (red) as boxes on a micrograph, like the thesis figures.

    The image is contrast-normalised (clipped to the given percentiles) and block-averaged by an
    integer factor so that its longer side is at most ``max_size_px``; boxes are drawn in the
    coordinates of the original image, so they land where the particles are.

    Parameters
    ----------
    image : (H, W) array
        The micrograph as read (any dtype).
    path : path
        PNG file to write.
    picks, truth : Picks, optional
        Coordinates in pixels of ``image`` (every entry is drawn; select one micrograph first, e.g.
        with `Picks.for_micrograph`).
    box_px : float
        Box side in pixels of ``image``.
    title : str
        Text written at the top of the figure.
    threshold : float, optional
        Draw only picks with score >= threshold (unscored picks are always drawn).
    max_size_px : int
        Longest side of the rendered micrograph in pixels.
    clip_percentiles : (low, high)
        Intensity percentiles mapped to black and white.

    Returns
    -------
    Path
        The PNG written.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    image = np.asarray(image)
    if image.ndim != 2 or min(image.shape) == 0:
        raise ValueError(f"overlay needs a 2D image, got shape {image.shape}")
    if not box_px > 0:
        raise ValueError(f"box_px must be positive, got {box_px}")
    view, factor = downsample_for_view(image, max_size_px)
    view = contrast_normalise(view, *clip_percentiles)
    height, width = image.shape
    h_view, w_view = view.shape
    dpi = 100
    fig, ax = _figure((w_view / dpi, h_view / dpi), dpi=dpi, axes_rect=(0, 0, 1, 1))
    # Extent in original pixels: pixel centres at integers, as in Picks coordinates.
    ax.imshow(view, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
              extent=(-0.5, w_view * factor - 0.5, h_view * factor - 0.5, -0.5))
    counts = []
    for which, colour in ((truth, TRUTH_COLOUR), (picks, PICK_COLOUR)):
        if which is None:
            continue
        if which is picks and threshold is not None:
            which = which.above(threshold)
        half = box_px / 2.0
        boxes = [Rectangle((x - half, y - half), box_px, box_px)
                 for x, y in zip(which.x.tolist(), which.y.tolist(), strict=True)]
        ax.add_collection(PatchCollection(boxes, facecolor="none", edgecolor=colour, linewidth=line_width))
        counts.append(f"{'truth' if colour == TRUTH_COLOUR else 'picks'} {len(which)}")
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    ax.set_axis_off()
    text = "  ".join(part for part in (title, ", ".join(counts)) if part)
    if text:
        fig.text(0.01, 0.99, text, ha="left", va="top", fontsize=9, color="white",
                 bbox={"facecolor": "black", "alpha": 0.6, "pad": 3, "edgecolor": "none"})
    return _save(fig, path)


def contrast_normalise(image: np.ndarray, low: float = 1.0, high: float = 99.0) -> np.ndarray:
    """Map the ``low``..``high`` intensity percentiles to 0..1 (clipped), as float32."""
    data = np.asarray(image, dtype=np.float32)
    finite = data[np.isfinite(data)]
    if finite.size == 0:
        return np.zeros_like(data)
    lo, hi = np.percentile(finite, [low, high])
    if hi <= lo:
        return np.zeros_like(data)
    return np.clip((np.nan_to_num(data, nan=lo) - lo) / (hi - lo), 0.0, 1.0)


def downsample_for_view(image: np.ndarray, max_size_px: int) -> tuple[np.ndarray, int]:
    """Block-average by the smallest integer factor that brings the longer side to <= ``max_size_px``.

    Returns the binned image (trailing rows/columns that do not fill a block are dropped) and the factor.
    """
    if max_size_px < 1:
        raise ValueError(f"max_size_px must be >= 1, got {max_size_px}")
    height, width = image.shape
    factor = max(1, int(np.ceil(max(height, width) / max_size_px)))
    if factor == 1:
        return np.asarray(image, dtype=np.float32), 1
    h, w = height // factor, width // factor
    # (h*f, w*f) -> (h, f, w, f) -> mean over the two block axes
    blocks = np.asarray(image[: h * factor, : w * factor], dtype=np.float32).reshape(h, factor, w, factor)
    return blocks.mean(axis=(1, 3)), factor


def _figure(size: tuple[float, float], dpi: int = 110, axes_rect=None):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_axes(axes_rect) if axes_rect is not None else fig.add_subplot(1, 1, 1)
    return fig, ax


def _finish_curve_axes(ax, title: str) -> None:
    ax.set_xlim(0.0, 1.0)
    ax.set_ylim(0.0, 1.02)
    ax.grid(True, color="0.9", lw=0.6)
    ax.set_title(title)
    ax.legend(loc="lower left", fontsize=8, frameon=False)
    ax.figure.tight_layout()


def _save(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            fig.savefig(handle, format="png", dpi=fig.dpi)
    log.debug("wrote %s", path)
    return path


def _fmt(value: float) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.3f}"
