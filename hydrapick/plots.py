"""Kept for `hydrapick.pick_outputs` until picking imports `hydrapick.evaluation.plots` itself."""

from .evaluation.plots import contrast_normalise, downsample_for_view, overlay, pr_curves, roc_curves

__all__ = ["contrast_normalise", "downsample_for_view", "overlay", "pr_curves", "roc_curves"]
