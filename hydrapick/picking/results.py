"""What picking gives back for one micrograph: a `PickResult`, or the one-line reason it failed."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..config import FALLBACK_THRESHOLD
from ..picks import Picks


class PickError(ValueError):
    """A micrograph that cannot be picked (one line naming the file and the reason)."""


@dataclass
class PickResult:
    """The outcome for one micrograph.

    Attributes
    ----------
    path : str
        The file read.
    name : str
        The micrograph name written to outputs.
    picks : Picks
        Every candidate with score >= the score floor, in pixels of the micrograph as read, highest
        score first; ``diameter_px`` is the particle diameter in those pixels.
    threshold : float
        Score threshold for the main output (`selected`).
    error : str or None
        Why the micrograph could not be picked (one line naming the file); None on success.
    shape : (height, width) or None
    pixel_size_A : float or None
    """

    path: str
    name: str
    picks: Picks = field(default_factory=Picks.empty)
    threshold: float = FALLBACK_THRESHOLD
    error: str | None = None
    shape: tuple[int, int] | None = None
    pixel_size_A: float | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def selected(self) -> Picks:
        """Picks at or above `threshold`: what goes into the main output."""
        return self.picks.above(self.threshold)


def failure_reason(path: str, exc: BaseException) -> str:
    """One line (at most 300 characters) naming the file and what went wrong."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if path not in text:
        text = f"File '{path}': {text}"
    return text if len(text) <= 300 else text[:297] + "..."
