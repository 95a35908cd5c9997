"""The errors of training and fine-tuning, below every training module so any of them can raise them."""

from __future__ import annotations


class TrainingError(RuntimeError):
    """Training cannot start or continue (diverged loss, resume state that does not fit, ...)."""


class FinetuneError(ValueError):
    """Fine-tuning cannot run with these inputs (one line naming the problem)."""
