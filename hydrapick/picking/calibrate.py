"""Finding the particle's scale on the data: label-free size calibration.

The diameter a user types moves AP more than anything else (docs/picking.md, "Scale calibration"): users
know their particle's size to perhaps a quarter, "diameter" means different things to different people,
and the network has its own idea of what a particle of a given size looks like. So, before a run, the
picker measures the scale itself:

1. A few micrographs spread over the run (`CALIBRATION_MICROGRAPHS`) are read once each.
2. A ladder of diameters around the typed one (`CALIBRATION_RANGE`; 50-600 Å when no diameter is given)
   is tried on a window of each, `CALIBRATION_WINDOW` diameters wide and centred on the micrograph (binned
   first where the model's scale is far below the micrograph's). Every rung lies on one fixed grid,
   `GRID_ANCHOR_A` x 2^(n/8) Å, whatever was typed, so two users who type different diameters around the
   same particle compare the same rungs and get the same answer (a ladder that moved with the typed
   diameter chose differently on a set whose criterion is flat: docs/picking.md).
   The window grows with the diameter tried, so every rung is one network pass over the same number of
   model pixels: the rungs cost the same, and each sees the same number of
   places where a particle could be (with more places, the best scores rise by chance alone).
3. Each rung is scored by a label-free criterion (`criterion`): the mean of the `CRITERION_TOP` best
   candidate scores in the window (about the best tenth of its places; fewer, in proportion, where the
   micrograph is smaller than the window: `window_top`), averaged over the micrographs.
4. The first pass tries every `COARSE_STEP` (2^(1/2)); `REFINEMENTS` passes then try the grid's rungs
   half a step either side of the best so far (2^(1/4), then 2^(1/8)): 9 rungs around a typed diameter
   where a ladder at 2^(1/4) with one refinement took 11, for the same choice on the measured curves.
5. A parabola is fitted through the rungs around the best one, and the run is picked at the smaller
   diameter where it is `CRITERION_TOLERANCE` below its peak (`peak_diameter`).

Everything is deterministic: the same micrographs and options give the same diameter, so SLURM shards
that calibrate on the whole input list agree. A dataset where no rung finds a confident particle
(empty ice, a wrong pixel size) keeps the typed diameter and says so.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..config import MIN_DISTANCE_FRACTION, PICK_HEAD, SCORE_FLOOR, PreprocessConfig
from ..device import cpu_threads, resolve_device, torch_threads
from ..io.inputs import MicrographInput
from ..preprocess import check_particle_size, outlier_bounds, prepare, scale_factor
from .engine import BatchPicker, Decoder, check_head, model_and_metadata
from .reading import Loaded, as_input

log = logging.getLogger(__name__)

__all__ = ["CALIBRATION_FILE", "ScaleCalibration", "calibrate_scale", "criterion", "grid_ladder",
           "peak_diameter"]

CALIBRATION_FILE = "scale_calibration.json"
CALIBRATION_MICROGRAPHS = 3  # micrographs spread over the run
CALIBRATION_WINDOW = 8.0  # window side, in diameters tried (about 64 particle places)
CRITERION_TOP = 6  # candidates the criterion averages per window (about the best tenth of its places)
CALIBRATION_RANGE = 2.0  # the ladder spans typed / 2 .. typed x 2
GRID_ANCHOR_A = 100.0  # every rung is GRID_ANCHOR_A x 2^(n/8) Å, whatever was typed
REFINEMENTS = 2  # passes after the first, each at half the previous step
EDGE_EXTENSIONS = 2  # coarse rungs added beyond an end of the ladder where the best one lies
GRID_UNIT = 2 ** (1 / 8)  # the finest step: the last refinement's
COARSE_STEP = GRID_UNIT ** (2 ** REFINEMENTS)  # 2^(1/2): the first pass
NO_DIAMETER_RANGE_A = (50.0, 600.0)
# Below this criterion at every rung nothing was found (empty ice, a wrong pixel size): keep the typed
# diameter. The bundled model's best candidates score 0.5-0.95 on particles, under 0.1 on plain noise.
CRITERION_FLOOR = 0.2
# The choice is the smaller diameter at which the criterion fitted around its peak is this fraction below
# the peak (`peak_diameter`): about the spread between neighbouring rungs where the curve is flat.
CRITERION_TOLERANCE = 0.02


@dataclass(frozen=True)
class ScaleCalibration:
    """The diameter a run picks at and how it was chosen.

    Attributes
    ----------
    diameter_A : float
        The diameter picked at.
    typed_diameter_A : float or None
        What the user gave (None: no diameter given).
    method : str
        "calibrated", "typed" (calibration off), "kept typed" (nothing found), "estimated" (no diameter).
    micrographs : tuple of str
        Names of the micrographs calibrated on.
    ladder_A, criterion : tuple of float
        Every diameter tried (ascending) and its criterion (`criterion`, averaged over micrographs).
    """

    diameter_A: float
    typed_diameter_A: float | None
    method: str
    micrographs: tuple[str, ...] = ()
    ladder_A: tuple[float, ...] = ()
    criterion: tuple[float, ...] = ()
    note: str = ""
    version: int = field(default=1)

    @property
    def factor(self) -> float | None:
        """Chosen over typed diameter (None without a typed one)."""
        return None if self.typed_diameter_A is None else self.diameter_A / self.typed_diameter_A

    def summary(self) -> str:
        """One line for logs and the command's summary."""
        if self.method == "typed":
            return f"diameter {self.diameter_A:.1f} Å as typed (calibration off)"
        if self.method == "kept typed":
            return f"diameter {self.diameter_A:.1f} Å as typed ({self.note})"
        if self.method == "estimated":
            return (f"diameter {self.diameter_A:.1f} Å estimated on {len(self.micrographs)} micrograph(s) "
                    "(no diameter given)")
        return (f"diameter {self.diameter_A:.1f} Å calibrated on {len(self.micrographs)} micrograph(s) "
                f"({self.factor:.2f} x the {self.typed_diameter_A:g} Å typed)")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ScaleCalibration:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        for key in ("micrographs", "ladder_A", "criterion"):
            known[key] = tuple(known.get(key, ()))
        return cls(**known)

    def save(self, path: str | os.PathLike) -> Path:
        from ..io.atomic import write_text

        path = Path(path)
        write_text(path, json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> ScaleCalibration:
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))


def grid_diameter(n: int) -> float:
    """Rung ``n`` of the calibration grid: `GRID_ANCHOR_A` x 2^(n/8) Å (always computed from ``n``, so a
    rung reached by two passes is one diameter)."""
    return GRID_ANCHOR_A * 2.0 ** (n / 8)


def _grid_index(diameter_A: float) -> float:
    return 8.0 * math.log2(diameter_A / GRID_ANCHOR_A)


def grid_ladder(low_A: float, high_A: float, step: float = COARSE_STEP) -> list[int]:
    """Grid indices (`grid_diameter`) of the rungs every ``step`` (a power of 2^(1/8)) from ``low_A`` to
    ``high_A``, both included when on the grid; ascending."""
    stride = round(math.log(step) / math.log(GRID_UNIT))
    lo = math.ceil(_grid_index(low_A) / stride - 1e-9)
    hi = math.floor(_grid_index(high_A) / stride + 1e-9)
    return [k * stride for k in range(lo, hi + 1)]


def criterion(scores: np.ndarray, top: int = CRITERION_TOP) -> float:
    """Label-free quality of one rung on one window: the mean of its ``top`` best candidate scores
    (fewer candidates count as zeros).

    Measured against AP on the three real sets in docs/picking.md ("Scale calibration"): the network is
    surest at the scale where it ranks particles best. Because the window grows with the diameter tried,
    every rung offers the same number of places, so a smaller diameter (a larger image) gets no more
    chances at a high score than a larger one. A window the micrograph cannot hold (`window_top`) reads
    fewer candidates, in proportion.
    """
    top_scores = np.sort(np.asarray(scores, dtype=np.float64))[::-1][:top]
    return float(top_scores.sum() / top)


def window_top(window_shape: tuple[int, int], side_px: float) -> int:
    """How many candidates the criterion reads in a window of ``window_shape`` that should have been
    ``side_px`` square: `CRITERION_TOP` in proportion to the area it has (at least one).

    A micrograph a few diameters wide cannot hold the window of a large diameter; with the same number of
    candidates read, its fewer places would then be read deeper (into the background) than the full
    windows of the smaller diameters, which favours small diameters: on 1024-px micrographs of a 188 Å
    particle at 1 Å/px (five diameters wide, three particles each) calibration chose 100 Å and AP fell
    from 0.60 to 0.06. Reading the same share of the places at every rung removes that bias.
    """
    share = min(1.0, window_shape[0] * window_shape[1] / (side_px * side_px))
    return max(1, round(CRITERION_TOP * share))


def _spread(items: Sequence, count: int) -> list:
    if len(items) <= count:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, count)).astype(int))
    return [items[i] for i in idx]


class _Micrograph(NamedTuple):
    """A calibration micrograph as read, and the range its outliers are clipped to (`outlier_bounds`, from
    the whole micrograph, as picking clips it)."""

    item: MicrographInput
    data: torch.Tensor
    pixel_size_A: float
    bounds: tuple[float, float]


def _window(data: torch.Tensor, side_px: float) -> torch.Tensor:
    """The centred square of ``side_px`` (the whole micrograph along a shorter side)."""
    h, w = data.shape
    sh, sw = min(h, int(round(side_px))), min(w, int(round(side_px)))
    top, left = (h - sh) // 2, (w - sw) // 2
    return data[top:top + sh, left:left + sw]


def _binned(window: torch.Tensor, pixel_size_A: float, diameter_A: float,
            config) -> tuple[torch.Tensor, float]:
    """``window`` averaged over b x b pixel blocks where the model's scale is below 1 / (2 b), and its
    pixel size: the anti-aliased resampling then still reads at least 2 pixels per output pixel along a
    side. A window of a large diameter holds millions of pixels; binning first makes its resampling
    cheaper. Binning down to the model's scale itself (b = 1 / scale) changed the choice on one test set;
    this does not change it on the real sets (docs/picking.md)."""
    b = int(1.0 / (2.0 * scale_factor(pixel_size_A, diameter_A, config)))
    if b < 2:
        return window, pixel_size_A
    # Block means (h // b, w // b); a remainder of fewer than b rows or columns is left out.
    return F.avg_pool2d(window[None, None], b)[0, 0], pixel_size_A * b


class _Rungs:
    """Scores windows of the calibration micrographs at one diameter, with the picking engine's own
    network pass and decoding (so the criterion sees exactly what picking would)."""

    def __init__(self, net: nn.Module, metadata: dict, head: str, device: torch.device,
                 micrographs: list[_Micrograph],
                 mixed_precision: bool) -> None:
        self.net, self.head, self.device, self.micrographs = net, head, device, micrographs
        self.mixed_precision = mixed_precision
        self.config = net.config  # type: ignore[attr-defined]
        preprocess = metadata.get("preprocess") or {}
        self.clip = float(preprocess.get("clip_percentile", PreprocessConfig().clip_percentile))

    def __call__(self, diameter_A: float) -> float:
        # Twice the criterion's candidates: one decoded just outside the window is dropped after NMS.
        decoder = Decoder(self.config, diameter_A, 0.5, MIN_DISTANCE_FRACTION * diameter_A, 0.0, SCORE_FLOOR,
                          max_candidates=2 * CRITERION_TOP)
        picker = BatchPicker(self.net, self.head, self.device, decoder, mixed_precision=self.mixed_precision,
                             tta=False, max_tile_px=None)
        by_shape: dict[tuple[int, int], list[Loaded]] = {}
        tops: dict[str, int] = {}  # by path: two calibration micrographs may share a name
        for item, data, pixel_size_A, bounds in self.micrographs:
            side = CALIBRATION_WINDOW * diameter_A / pixel_size_A
            window = _window(data, side)
            tops[str(item.path)] = window_top(tuple(window.shape), side)
            window, size_A = _binned(window.clamp(*bounds), pixel_size_A, diameter_A, self.config)
            prepared = prepare(window, size_A, diameter_A, self.config, clip_percentile=self.clip,
                               device=self.device, outliers_clipped=True)
            by_shape.setdefault(tuple(prepared.image.shape), []).append(Loaded(item, prepared, pixel_size_A))
        # Windows of equal shape (micrographs of one size) go through the network as one batch.
        values = [criterion(r.picks.score, tops[str(r.path)]) if r.ok else 0.0 for batch in by_shape.values()
                  for r in picker(batch)]
        return float(np.mean(values))


def calibrate_scale(micrographs: Sequence[str | os.PathLike | MicrographInput], *, model=None,
                    head: str = PICK_HEAD, diameter_A: float | None = None, pixel_size_A: float | None = None,
                    n_micrographs: int = CALIBRATION_MICROGRAPHS, device: str | torch.device = "auto",
                    num_threads: int | None = None, mixed_precision: bool = True,
                    progress: Callable[[int, int], None] | None = None) -> ScaleCalibration:
    """Choose the diameter to pick ``micrographs`` at, without labels.

    Parameters
    ----------
    micrographs : sequence of path or MicrographInput
        The run's micrographs, in order; `CALIBRATION_MICROGRAPHS` spread over them are used.
    model, head : see `hydrapick.picking.engine.pick_micrographs`
    diameter_A : float, optional
        The typed diameter (Å): the ladder spans half to twice it. None: 50-600 Å.
    pixel_size_A : float, optional
        Overrides the micrographs' pixel size.
    progress : callable, optional
        Called with (rungs done, rungs planned) after each rung.

    Returns
    -------
    ScaleCalibration
        With ``method`` "kept typed" when no rung found a sure particle (the typed diameter is kept; with
        no typed diameter that raises ValueError instead, since there is nothing to fall back on).

    Raises
    ------
    ValueError
        No micrograph could be read, or no diameter was given and none could be found.
    """
    from ..io import read_micrograph

    net, metadata = model_and_metadata(model)
    check_head(net, head)
    cfg = net.config  # type: ignore[attr-defined]
    dev = resolve_device(device)
    net = net.to(dev).eval()
    loaded: list[_Micrograph] = []
    missing = ""
    items = [as_input(m) for m in micrographs]
    # Unreadable micrographs are skipped here (the run reports them); the next ones along stand in.
    first = _spread(items, n_micrographs)
    for item in first + [it for it in items if it not in first]:
        if len(loaded) == n_micrographs:
            break
        try:
            mic = read_micrograph(item.path, pixel_size_A=pixel_size_A or item.pixel_size_A)
        except Exception as exc:  # noqa: BLE001 - reported when the run picks it
            log.info("calibration skips %s: %s", item.path, exc)
            continue
        if mic.pixel_size_A is None:
            from ..io.mrc import no_pixel_size

            missing = no_pixel_size(item.path)  # reported when the run picks it
            continue
        data = torch.from_numpy(np.array(mic.data, dtype=np.float32))
        # Outliers are clipped to the whole micrograph's range, as picking clips them (each rung's window
        # is clamped to it; prepare() does not clip again).
        # A NaN or infinity anywhere makes the sum not finite (a sum is a twentieth of isfinite's time).
        bounds = outlier_bounds(data) if math.isfinite(float(data.sum(dtype=torch.float64))) else None
        if bounds is None:  # constant, or not finite: nothing to measure on
            continue
        loaded.append(_Micrograph(item, data, float(mic.pixel_size_A), bounds))
    if not loaded:
        why = f"no readable micrograph to measure the particle size on{'; ' + missing if missing else ''}"
        if diameter_A is None:
            raise ValueError(f"{why}; give --diameter")
        return ScaleCalibration(float(diameter_A), float(diameter_A), "kept typed", note=why)

    if diameter_A is None:
        low, high = NO_DIAMETER_RANGE_A
    else:
        low, high = diameter_A / CALIBRATION_RANGE, diameter_A * CALIBRATION_RANGE
    # Rungs the model cannot resolve (far too small or large in pixels) are left out of the ladder.
    ladder = [n for n in grid_ladder(low, high) if _resolvable(grid_diameter(n), loaded, cfg)]
    if not ladder:
        raise ValueError(f"no diameter between {low:g} and {high:g} Å can be picked at "
                         f"{loaded[0].pixel_size_A:g} Å/px: check the pixel size")
    rungs = _Rungs(net, metadata, head, dev, loaded, mixed_precision)
    planned = len(ladder) + 2 * REFINEMENTS
    done = 0

    scores: dict[int, float] = {}  # grid index -> criterion

    def tried(n: int) -> None:
        nonlocal done
        if n not in scores and _resolvable(grid_diameter(n), loaded, cfg):
            scores[n] = rungs(grid_diameter(n))
        done += 1
        if progress is not None:
            progress(done, planned)

    with torch_threads(None if dev.type == "cuda" else cpu_threads(num_threads)):
        for n in ladder:
            tried(n)
        stride = 2 ** REFINEMENTS
        # A best rung at an end of the ladder gets its outer neighbour too (up to EDGE_EXTENSIONS times), so
        # the fit around the best always has a coarse step on each side, and diameters typed far apart
        # around one particle read the same rungs.
        for _ in range(EDGE_EXTENSIONS):
            best = max(scores, key=scores.__getitem__)
            lowest, highest = min(scores), max(scores)
            if best not in (lowest, highest):
                break
            outer = best - stride if best == lowest else best + stride
            if not _resolvable(grid_diameter(outer), loaded, cfg):
                break
            planned += 1
            tried(outer)
        for _ in range(REFINEMENTS):
            stride //= 2
            best = max(scores, key=scores.__getitem__)
            for n in (best - stride, best + stride):
                tried(n)
    # The picking passes left the weights channels-last (the CPU's faster layout); what runs next on this
    # network (adaptation trains a head on it) must see it as a run without calibration would, or a
    # continued run, which reuses the calibration, would adapt to slightly different weights.
    net.to(memory_format=torch.contiguous_format)
    ladder_A = tuple(round(grid_diameter(n), 6) for n in sorted(scores))
    values = tuple(scores[n] for n in sorted(scores))
    names = tuple(m.item.name for m in loaded)
    best_v = max(values)
    # Rungs beyond the ladder (an end's outer neighbours) only shape the fit: the choice stays within the
    # range searched, half to twice the typed diameter (a small micrograph's windows cannot hold 8 large
    # diameters, which favours small rungs, and 0.3x the typed size is no answer a user expects).
    best_d = min(max(peak_diameter(scores), low), high)
    if best_v < CRITERION_FLOOR:
        note = f"no rung from {ladder_A[0]:.0f} to {ladder_A[-1]:.0f} Å found a sure particle"
        if diameter_A is None:
            raise ValueError(f"could not measure the particle size: {note}; give --diameter")
        return ScaleCalibration(float(diameter_A), float(diameter_A), "kept typed", names, ladder_A, values,
                                note=note)
    method = "estimated" if diameter_A is None else "calibrated"
    result = ScaleCalibration(float(best_d), None if diameter_A is None else float(diameter_A), method,
                              names, ladder_A, values)
    log.info("%s", result.summary())
    return result


def peak_diameter(scores: dict[int, float]) -> float:
    """The diameter to pick at, from the rungs tried (grid index -> criterion).

    A least-squares parabola in log diameter goes through the rungs within one coarse step
    (`COARSE_STEP`) of the best one: each rung's criterion is a mean of a few dozen scores and is noisy
    where the curve is flat (EMPIAR-10059: neighbouring rungs 0.42-0.45, in no smooth order), so the fit
    reads the five to seven rungs around the best instead of trusting the single highest. Its peak (kept
    within half a coarse step of the best rung and inside the rungs fitted) is where the network is surest;
    the choice is the smaller diameter at which the fitted criterion is `CRITERION_TOLERANCE` below that
    peak. Of sizes the network is about equally sure of, the smaller one picks better: the network's
    confidence keeps rising a little past the size where AP is best (on a small simulated particle its
    peak lies at 1.3x, where AP is 0.11 below the best), while a size too large merges and suppresses
    neighbours (the minimum distance follows the size). The best rung itself (or the smallest rung within
    the tolerance of it) when fewer than three rungs are near or the parabola does not open downwards.
    """
    best = max(scores, key=scores.__getitem__)
    span = 2 ** REFINEMENTS
    near = sorted(n for n in scores if abs(n - best) <= span)
    if len(near) >= 3:
        a, b, c = np.polyfit(np.asarray(near, dtype=float), [scores[n] for n in near], 2)
        if a < 0:
            peak = min(max(-b / (2 * a), best - span / 2, near[0]), best + span / 2, near[-1])
            height = (a * peak + b) * peak + c
            x = max(peak - math.sqrt(max(CRITERION_TOLERANCE * height, 0.0) / -a), near[0])
            return GRID_ANCHOR_A * 2.0 ** (x / 8)
    floor = (1.0 - CRITERION_TOLERANCE) * scores[best]
    return grid_diameter(min(n for n in scores if scores[n] >= floor))


def _resolvable(diameter_A: float, loaded, config) -> bool:
    try:
        for pixel_size_A in {m.pixel_size_A for m in loaded}:
            check_particle_size(diameter_A, pixel_size_A, config)
    except ValueError:
        return False
    return True
