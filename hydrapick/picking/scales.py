"""Picking at several particle scales and merging the candidates (``pick --scales``).

Users know their particle's diameter to perhaps a quarter, and the network is sharpest on particles near
the size it is told (docs/model.md, "Diameter tolerance"). With ``--scales 0.89,1,1.12`` each micrograph
is picked once per factor r, as if the diameter were r x the one typed, and the candidates of all passes
are merged: candidates within the minimum distance of each other are one place, kept at the position of
its best candidate, scored by the mean over the passes of each pass's best score there (0 where a pass
found nothing). A particle found at every scale keeps its score; one found at a single scale is scored
down, so the merged scores rank places by how consistently they look like particles.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

import numpy as np
from scipy.spatial import cKDTree

from ..picks import Picks
from .results import PickResult

__all__ = ["merge_scales", "parse_scales", "scale_major"]

T = TypeVar("T")

# Candidate passes further apart than this cannot be the same particle seen at another size, and a
# diameter off by more than this is a unit mistake rather than an uncertainty.
SCALE_RANGE = (0.5, 2.0)


def parse_scales(scales: str | float | Sequence[float] | None) -> tuple[float, ...]:
    """Factors of the typed diameter from "0.89,1,1.12", a number or a sequence; (1.0,) for None.

    Each must lie in `SCALE_RANGE`; duplicates are dropped, order kept.
    """
    if scales is None:
        return (1.0,)
    if isinstance(scales, str):
        parts = [p.strip() for p in scales.split(",")]
        try:
            values = [float(p) for p in parts if p]
        except ValueError:
            raise ValueError(f"scales must be comma-separated numbers such as 0.89,1,1.12, not {scales!r}"
                             ) from None
    elif isinstance(scales, (int, float)):
        values = [float(scales)]
    else:
        values = [float(v) for v in scales]
    if not values:
        raise ValueError("scales: give at least one factor of the diameter, such as 0.89,1,1.12")
    lo, hi = SCALE_RANGE
    bad = [v for v in values if not (math.isfinite(v) and lo <= v <= hi)]
    if bad:
        raise ValueError(f"scales are factors of the diameter between {lo:g} and {hi:g}; got {bad[0]:g}")
    return tuple(dict.fromkeys(values))


def scale_major(per_item: Iterable[Sequence[T]], chunk: int) -> Iterator[T]:
    """Each item's entries (one per scale) regrouped: items in chunks of ``chunk``, each chunk's items at
    scale 0, then at scale 1...

    So a chunk's micrographs at one scale have one shape and share a forward pass, and every micrograph's
    passes are done once its chunk is. One scale: the items' entries in their order.
    """
    it = iter(per_item)
    while True:
        got = list(itertools.islice(it, chunk))
        if not got:
            return
        for k in range(len(got[0])):
            for entries in got:
                yield entries[k]


def merge_scales(passes: Sequence[PickResult], radius_px: float, diameter_px: float,
                 score_floor: float = 0.0) -> PickResult:
    """One micrograph's results at each scale -> one result (see the module's description).

    Parameters
    ----------
    passes : sequence of PickResult
        The same micrograph picked at each scale, all with candidates down to the score floor.
    radius_px : float
        Candidates closer than this (micrograph pixels) are one place: the minimum distance between picks.
    diameter_px : float
        Diameter written with every merged pick (the one typed, in micrograph pixels).
    score_floor : float
        Merged places scoring below this are dropped, as candidates are in a one-scale pass.

    Returns
    -------
    PickResult
        The first pass's result with the merged candidates, highest score first; the first failed pass if
        any failed (a micrograph is picked at every scale or not at all).
    """
    failed = next((p for p in passes if not p.ok), None)
    if failed is not None:
        return failed
    first = passes[0]
    picks = Picks.concat(p.picks for p in passes)
    n = len(picks)
    merged = Picks.empty()
    if n:
        run = np.concatenate([np.full(len(p.picks), k) for k, p in enumerate(passes)])
        xy = np.stack([picks.x, picks.y], axis=1)
        if radius_px > 0:
            neighbours = cKDTree(xy).query_ball_point(xy, r=radius_px)
        else:
            neighbours = [[i] for i in range(n)]
        taken = np.zeros(n, dtype=bool)
        keep, scores = [], []
        for i in np.argsort(-picks.score, kind="stable"):
            if taken[i]:
                continue
            near = np.asarray(neighbours[i], dtype=np.intp)
            near = near[~taken[near]]
            best = np.zeros(len(passes))
            np.maximum.at(best, run[near], picks.score[near])
            taken[near] = True
            keep.append(i)
            scores.append(best.mean())
        index = np.asarray(keep, dtype=np.intp)
        merged = Picks(micrograph=picks.micrograph[index], x=picks.x[index], y=picks.y[index],
                       score=np.asarray(scores), diameter_px=np.full(len(index), diameter_px))
        merged = merged.sorted_by_score().above(score_floor)
    return PickResult(path=first.path, name=first.name, picks=merged, threshold=first.threshold,
                      shape=first.shape, pixel_size_A=first.pixel_size_A)

