"""Micrographs in, `Picks` out: the picking engine.

`pick_micrographs` reads and preprocesses micrographs in background threads while the model works
(`MicrographReader`, with `hydrapick.preprocess.prepare` exactly as in training), batches micrographs of
equal model-scale shape (`batches`), runs the network on them (`BatchPicker`, with
`hydrapick.picking.inference.infer`, which tiles micrographs too large for one pass with identical
results), and turns the outputs into picks in the micrograph's own pixels (`Decoder`, with
`hydrapick.model.anchors.detect_picks`). One bad micrograph gives a `PickResult` with ``error`` set; the
others go on. `hydrapick.picking.run.pick` wraps the engine with inputs and output files.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext
from typing import Any

import numpy as np
import torch
from torch import nn

from ..checkpoint import load_model
from ..config import (
    FALLBACK_THRESHOLD,
    MAX_TILE_PX,
    MIN_DISTANCE_FRACTION,
    PICK_BATCH_SIZE,
    PICK_HEAD,
    SCORE_FLOOR,
    TILE_ACTIVATION_BYTES,
    ModelConfig,
    PreprocessConfig,
)
from ..device import (
    cpu_has_native_bf16,
    cpu_threads,
    resolve_device,
    reuse_freed_memory,
    torch_threads,
    usable_cpu_count,
)
from ..io.inputs import MicrographInput
from ..model.anchors import anchor_centres, detect_picks
from .inference import auto_tile_px, infer, infer_symmetrised
from .reading import Loaded, MicrographReader, as_input, batches, ordered_prefetch
from .results import PickError, PickResult, failure_reason
from .scales import merge_scales, parse_scales, scale_major

log = logging.getLogger(__name__)

__all__ = ["BatchPicker", "Decoder", "PickError", "PickResult", "check_head", "model_and_metadata",
           "optional_diameter", "pick_micrographs", "resolve_diameter", "resolve_threshold"]


# --- what to pick with ----------------------------------------------------------------------------------

def model_and_metadata(model) -> tuple[nn.Module, dict[str, Any]]:
    """The network and its metadata from None (the bundled model), a path, a pair or a module."""
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model)
    if isinstance(model, tuple) and len(model) == 2:
        return model[0], dict(model[1] or {})
    if isinstance(model, nn.Module):
        return model, dict(getattr(model, "metadata", None) or {})
    raise TypeError(f"model must be a checkpoint path, a (model, metadata) pair or a module, "
                    f"not {type(model).__name__}")


def check_head(model: nn.Module, head: str) -> None:
    """Raise ValueError naming the model's heads when it has no head ``head``."""
    heads = getattr(model, "heads", None)
    if heads is not None and head not in heads:
        raise ValueError(f"the model has no head named {head!r}; heads: {', '.join(heads.keys())}")


def resolve_threshold(metadata: dict[str, Any], head: str, threshold: float | None = None) -> float:
    """``threshold`` if given, else the calibrated threshold stored for ``head``, else 0.5 (warned)."""
    if threshold is not None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"threshold must be between 0 and 1, got {threshold}")
        return float(threshold)
    stored = (metadata.get("thresholds") or {}).get(head)
    if stored is None:
        log.warning("the checkpoint stores no calibrated threshold for head %r; using %.2f",
                    head, FALLBACK_THRESHOLD)
        return FALLBACK_THRESHOLD
    return float(stored)


def optional_diameter(metadata: dict[str, Any], head: str, diameter_A: float | None = None) -> float | None:
    """``diameter_A`` if given, else the particle diameter the head was trained for, else None."""
    if diameter_A is None and (metadata.get("diameters_A") or {}).get(head) is None:
        return None
    return resolve_diameter(metadata, head, diameter_A)


def resolve_diameter(metadata: dict[str, Any], head: str, diameter_A: float | None = None) -> float:
    """``diameter_A`` if given, else the particle diameter the head was trained for."""
    if diameter_A is None:
        diameter_A = (metadata.get("diameters_A") or {}).get(head)
        if diameter_A is None:
            raise ValueError(f"no particle diameter: give it in Å (--diameter); the model's head {head!r} "
                             "does not record one")
    diameter_A = float(diameter_A)
    if not (np.isfinite(diameter_A) and diameter_A > 0):
        raise ValueError(f"the particle diameter must be a positive finite number in Å, got {diameter_A}")
    return diameter_A


# --- network outputs to picks ---------------------------------------------------------------------------

class Decoder:
    """The network's outputs for one prepared micrograph -> its `PickResult`, in the micrograph's pixels."""

    def __init__(self, config: ModelConfig, diameter_A: float, threshold: float, min_distance_A: float,
                 border_A: float, score_floor: float, max_candidates: int | None = None) -> None:
        # max_candidates: only the best this many candidates per micrograph (scale calibration's
        # criterion reads a handful; `nms_by_distance` then stops early). None: every one.
        self.config, self.diameter_A, self.threshold = config, diameter_A, threshold
        self.max_candidates = max_candidates
        self.min_distance_A, self.border_A, self.score_floor = min_distance_A, border_A, score_floor
        self._anchors: dict[tuple[int, int], torch.Tensor] = {}
        self._warned: set[str] = set()

    def __call__(self, loaded: Loaded, outputs: torch.Tensor) -> PickResult:
        prep = loaded.prepared
        assert prep is not None and loaded.pixel_size_A is not None
        h, w = prep.image.shape
        if (h, w) not in self._anchors:
            self._anchors[(h, w)] = anchor_centres(h, w, self.config, device=outputs.device)
        picks = detect_picks(outputs, self._anchors[(h, w)], self.config, loaded.item.name,
                             min_distance_px=self.min_distance_A / loaded.pixel_size_A * prep.scale_x,
                             score_floor=self.score_floor, max_kept=self.max_candidates)
        picks = prep.to_original(picks)
        oh, ow = prep.original_shape
        self._warn_if_empty_by_design(loaded, oh, ow)
        # Centres beyond the image (a decoded offset can push one out) or within the border are dropped.
        picks = picks.inside(oh, ow, self.border_A / loaded.pixel_size_A)
        picks.diameter_px = np.full(len(picks), self.diameter_A / loaded.pixel_size_A)
        return PickResult(path=loaded.item.path, name=loaded.item.name, picks=picks, threshold=self.threshold,
                          shape=(oh, ow), pixel_size_A=loaded.pixel_size_A)

    def _warn_if_empty_by_design(self, loaded: Loaded, height: int, width: int) -> None:
        """Say why a micrograph cannot have picks: it is constant, or the border or the minimum distance
        (once per run) leaves no room; 0 picks otherwise looks like a micrograph without particles."""
        if loaded.prepared is not None and loaded.prepared.constant:
            log.warning("'%s' is constant (every pixel one value): nothing to pick; a blank or failed "
                        "micrograph?", loaded.item.path)
        size_A = min(height, width) * loaded.pixel_size_A  # type: ignore[operator]
        for key, value, what in (("border", 2 * self.border_A, "the border"),
                                 ("distance", self.min_distance_A, "the minimum distance")):
            if value >= size_A and key not in self._warned:
                self._warned.add(key)
                log.warning("%s (%g Å) leaves no room for picks on '%s' (%g x %g Å): was it given in pixels? "
                            "--border and --min-distance take Å", what,
                            self.border_A if key == "border" else value, loaded.item.path,
                            width * loaded.pixel_size_A, height * loaded.pixel_size_A)

    def failed(self, item: MicrographInput, reason: str) -> PickResult:
        return PickResult(path=item.path, name=item.name, threshold=self.threshold, error=reason)


class BatchPicker:
    """Runs the network on a batch of prepared micrographs and decodes each; a failing batch is retried
    one micrograph at a time, so only the micrograph at fault fails."""

    def __init__(self, net: nn.Module, head: str, device: torch.device, decoder: Decoder | Sequence[Decoder],
                 *, mixed_precision: bool, tta: bool, max_tile_px: int | None) -> None:
        # One decoder per scale of ``pick --scales``, chosen by `Loaded.scale_index`.
        self.decoders = [decoder] if isinstance(decoder, Decoder) else list(decoder)
        self.net, self.head, self.device = net, head, device
        self.tta, self.max_tile_px = tta, max_tile_px
        self.cuda = device.type == "cuda"
        self.half = torch.bfloat16 if not self.cuda or torch.cuda.is_bf16_supported() else torch.float16
        self.autocast = mixed_precision and (self.cuda or cpu_has_native_bf16())
        # On a CPU, oneDNN's convolutions run a sixth to a quarter faster on channels-last activations,
        # GroupNorm included (docs/benchmarks.md); outputs agree with the default layout to float rounding.
        # Channels-last weights are enough: the one-channel input is channels-last already, and from the
        # first convolution on the activations follow the weights.
        if not self.cuda:
            self.net.to(memory_format=torch.channels_last)

    def __call__(self, batch: list[Loaded]) -> list[PickResult]:
        if batch[0].error is not None:
            return [self.decoders[0].failed(batch[0].item, batch[0].error)]
        try:
            return self._run(batch)
        except Exception as exc:  # noqa: BLE001
            if len(batch) > 1:
                return [r for b in batch for r in self([b])]
            return [self.decoders[0].failed(batch[0].item, failure_reason(batch[0].item.path, exc))]

    @torch.inference_mode()
    def _run(self, batch: list[Loaded]) -> list[PickResult]:
        if self.cuda:
            for b in batch:
                # Made on a reader's stream, used on this one: keep the allocator from reusing the memory
                # for the reader's next micrograph before the work queued here has read it.
                b.prepared.image.record_stream(torch.cuda.current_stream(self.device))  # type: ignore
        # (N, H, W) -> (N, 1, H, W)
        images = torch.stack([b.prepared.image for b in batch])[:, None]  # type: ignore[union-attr]
        amp = torch.autocast(self.device.type, dtype=self.half) if self.autocast else nullcontext()
        with amp:
            run = infer_symmetrised if self.tta else infer
            outputs = run(self.net, images.to(self.device), self.head, max_tile_px=self.max_tile_px)
        return [self.decoders[b.scale_index](b, outputs[i]) for i, b in enumerate(batch)]


# --- the engine -----------------------------------------------------------------------------------------

def _check_options(min_distance_A: float, border_A: float, score_floor: float, batch_size: int,
                   pixel_size_A: float | None) -> None:
    if min_distance_A < 0 or border_A < 0:
        raise ValueError("min_distance_A and border_A must not be negative")
    if not 0.0 <= score_floor <= 1.0:
        raise ValueError(f"score_floor must be between 0 and 1, got {score_floor}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if pixel_size_A is not None and not pixel_size_A > 0:
        raise ValueError(f"pixel size must be positive, got {pixel_size_A} Å")


def pick_micrographs(paths: Iterable[str | os.PathLike | MicrographInput], *, model=None,
                     head: str = PICK_HEAD, diameter_A: float | None = None,
                     pixel_size_A: float | None = None, threshold: float | None = None,
                     min_distance_A: float | None = None, border_A: float | None = None,
                     score_floor: float = SCORE_FLOOR, device: str | torch.device = "auto",
                     batch_size: int = PICK_BATCH_SIZE,
                     progress: Callable[[PickResult], None] | None = None,
                     max_tile_px: int | str | None = MAX_TILE_PX, num_workers: int | None = None,
                     num_threads: int | None = None, mixed_precision: bool = True,
                     tta: bool = False, scales: str | float | Sequence[float] | None = None,
                     ) -> Iterator[PickResult]:
    """Pick particles on micrographs, one `PickResult` per micrograph, in input order.

    Parameters
    ----------
    paths : iterable of path or MicrographInput
        MRC files (use `hydrapick.io.inputs.gather_inputs` for globs and lists).
    model : None, path, (model, metadata) or nn.Module
        None: the bundled generic model.
    head : str
        Head to pick with ("generic" for unseen specimens).
    diameter_A : float, optional
        Particle diameter in Å; default the diameter recorded for the head.
    pixel_size_A : float, optional
        Overrides every micrograph's pixel size (Å); default from the list or the MRC header.
    threshold : float, optional
        Score for `PickResult.selected`; default the head's calibrated threshold.
    min_distance_A : float, optional
        Minimum distance between picks in Å (default 0.6 x diameter).
    border_A : float, optional
        Picks whose centre lies closer than this to the micrograph edge (Å) are dropped. Default: half the
        diameter, so that every pick lies wholly inside the micrograph, as curated particle sets are
        labelled and as extraction needs; 0 keeps every centre in the image.
    score_floor : float
        Candidates scoring below this are not kept at all.
    device : str or torch.device
        "auto", "cpu", "cuda" or "cuda:N".
    batch_size : int
        Micrographs per forward pass (only micrographs of equal model-scale shape are batched).
    progress : callable, optional
        Called with each `PickResult` as it is produced.
    max_tile_px : int, "auto" or None
        Model-scale side above which a micrograph is processed in tiles (None: never, unless out of
        memory). "auto": where the network's widest activation on the whole micrograph would exceed
        ``TILE_ACTIVATION_BYTES`` (1 GiB; `hydrapick.picking.inference.auto_tile_px`).
    num_workers : int, optional
        Reader threads (default: 1 on CPU, min(8, cores) on CUDA).
    num_threads : int, optional
        CPU only: torch threads for the network (default ``OMP_NUM_THREADS`` when set, else every core
        this process may use).
    mixed_precision : bool
        Run the network under autocast: on CUDA in bfloat16 where supported, else float16; on a CPU
        with hardware bfloat16 (AVX512-BF16, AMX) in bfloat16, about 3x faster than float32 there.
        Scores then differ from float32 by about 0.01; False computes in float32 throughout.
    tta : bool
        Test-time augmentation: average the network's outputs over the 8 rotations and mirror images of
        each micrograph (`hydrapick.picking.inference.infer_symmetrised`). About 8x the network time; on
        held-out specimens the bundled model's AP rises by 0.003-0.010 (docs/picking.md).
    scales : str or sequence of float, optional
        Pick at each of these multiples of ``diameter_A`` ("0.89,1,1.12") and merge the candidates
        (`hydrapick.picking.scales`): more tolerant of a diameter typed up to a quarter off, at one
        network pass per scale. Default: the typed diameter alone.

    Yields
    ------
    PickResult
        A micrograph that cannot be read or picked gives a result with ``error`` set; the others go on.
    """
    items = [as_input(p) for p in paths]
    net, metadata = model_and_metadata(model)
    check_head(net, head)
    cfg: ModelConfig = net.config  # type: ignore[attr-defined]
    diameter_A = resolve_diameter(metadata, head, diameter_A)
    threshold = resolve_threshold(metadata, head, threshold)
    if min_distance_A is None:
        min_distance_A = MIN_DISTANCE_FRACTION * diameter_A
    if border_A is None:
        border_A = diameter_A / 2
    _check_options(min_distance_A, border_A, score_floor, batch_size, pixel_size_A)
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    net = net.to(dev).eval()
    preprocess = metadata.get("preprocess") or {}
    clip = float(preprocess.get("clip_percentile", PreprocessConfig().clip_percentile))
    workers = num_workers or (min(8, usable_cpu_count()) if cuda else 1)
    factors = parse_scales(scales)
    reader = MicrographReader(cfg, dev, [diameter_A * r for r in factors], clip, pixel_size_A)
    # Each scale's pass keeps its candidates min_distance_A apart, as the merge does.
    decoders = [Decoder(cfg, diameter_A * r, threshold, min_distance_A, border_A, score_floor)
                for r in factors]
    if cuda:
        torch.backends.cudnn.benchmark = True
    if max_tile_px == "auto":
        max_tile_px = auto_tile_px(net, head, TILE_ACTIVATION_BYTES)
    elif max_tile_px is not None and not isinstance(max_tile_px, int):
        raise ValueError(f"max_tile_px must be a number of pixels, 'auto' or None, not {max_tile_px!r}")
    picker = BatchPicker(net, head, dev, decoders, mixed_precision=mixed_precision, tta=tta,
                         max_tile_px=max_tile_px)
    # On the CPU, freed activations are kept for the next pass rather than page-faulted in afresh.
    with torch_threads(None if cuda else cpu_threads(num_threads)), \
            (nullcontext() if cuda else reuse_freed_memory()):
        # Each micrograph is read once and prepared at every scale; its scales' passes follow in
        # scale-major order within chunks of batch_size micrographs.
        loaded = scale_major(ordered_prefetch(items, reader, workers, depth=max(2 * batch_size, 2 * workers)),
                             batch_size)
        passes = (result for batch in batches(loaded, batch_size) for result in picker(batch))
        for result in _merged(passes, len(items), len(factors), batch_size, min_distance_A, diameter_A,
                              score_floor):
            if progress is not None:
                progress(result)
            yield result


def _merged(passes: Iterator[PickResult], n_items: int, n_scales: int, chunk: int, min_distance_A: float,
            diameter_A: float, score_floor: float) -> Iterator[PickResult]:
    """Each micrograph's result, its passes at every scale merged, in input order (passes come in
    `scale_major` order: one result per pass, a failed micrograph's included)."""
    if n_scales == 1:
        yield from passes
        return
    for start in range(0, n_items, chunk):
        m = min(chunk, n_items - start)
        got = [next(passes) for _ in range(m * n_scales)]
        for j in range(m):
            one = [got[k * m + j] for k in range(n_scales)]
            size = one[0].pixel_size_A or 1.0
            yield merge_scales(one, min_distance_A / size, diameter_A / size, score_floor)
