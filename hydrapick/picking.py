"""Micrographs in, `Picks` out: the model to pick with, the picking engine, and whole runs.

`pick_micrographs` is the engine: it reads and preprocesses micrographs in background threads while
the model works (`hydrapick.preprocess.prepare`, exactly as in training), batches micrographs of equal
model-scale shape, runs the network on them (`hydrapick.inference.infer`, which tiles micrographs too
large for one pass with identical results), decodes every candidate above a low score floor with
`hydrapick.anchors.detect` and maps it back to the micrograph's own pixels. `pick` (also
``hydrapick.pick``) wraps it with input gathering, sharding, atomic outputs in every supported format
(`hydrapick.pick_outputs`), ``skip_existing`` and previews; the ``hydrapick pick`` command is a thin
layer over `pick`.
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .config import ModelConfig, PickConfig, PreprocessConfig
from .device import cpu_has_native_bf16, cpu_threads, resolve_device, torch_threads, usable_cpu_count
from .inference import infer, infer_symmetrised
from .io.inputs import MicrographInput, gather_inputs, parse_shard, select_shard
from .pick_outputs import PickOutputs, output_format, write_preview
from .picks import Picks
from .preprocess import Prepared, prepare

log = logging.getLogger(__name__)

BUNDLED_MODEL = "generic.pt"
# Used when a checkpoint carries no calibrated threshold for the head (a model trained outside
# `hydrapick train`): 0.5 is the natural cut of a sigmoid score; a warning says so.
FALLBACK_THRESHOLD = 0.5
# Minimum distance between picks when none is given, as a fraction of the particle diameter: particles
# in a monolayer touch at 1 diameter; 0.8 still separates touching particles but merges duplicates.
DEFAULT_MIN_DISTANCE_FRACTION = 0.8


class PickError(ValueError):
    """A micrograph that cannot be picked (one line naming the file and the reason)."""


# --- model ----------------------------------------------------------------------------------------------

def bundled_model_path() -> Path | None:
    """Path of the bundled generic checkpoint, or None when this installation has none."""
    ref = importlib.resources.files("hydrapick") / "weights" / BUNDLED_MODEL
    return Path(str(ref)) if ref.is_file() else None


def load_model(path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu",
               ) -> tuple[nn.Module, dict[str, Any]]:
    """Load a checkpoint: the bundled generic model when ``path`` is None.

    Returns
    -------
    (model, metadata)
        The `hydrapick.model.HydraPicker` in eval mode and the checkpoint's metadata (thresholds,
        diameters_A, model_config, heads, ...).

    Raises
    ------
    hydrapick.checkpoint.CheckpointError
        Missing or unreadable checkpoint, including a missing bundled model.
    """
    from .checkpoint import CheckpointError, load_checkpoint

    if path is None:
        ref = importlib.resources.files("hydrapick") / "weights" / BUNDLED_MODEL
        if not ref.is_file():
            raise CheckpointError(
                f"the bundled generic model (hydrapick/weights/{BUNDLED_MODEL}) is not part of this "
                "installation; pass a checkpoint with --model FILE (model= in Python)")
        with importlib.resources.as_file(ref) as file:
            model, metadata = load_checkpoint(file, map_location=map_location)
    else:
        model, metadata = load_checkpoint(path, map_location=map_location)
    model.eval()
    return model, dict(metadata or {})


def _model_and_metadata(model) -> tuple[nn.Module, dict[str, Any]]:
    if model is None or isinstance(model, (str, os.PathLike)):
        return load_model(model)
    if isinstance(model, tuple) and len(model) == 2:
        return model[0], dict(model[1] or {})
    if isinstance(model, nn.Module):
        return model, dict(getattr(model, "metadata", None) or {})
    raise TypeError(f"model must be a checkpoint path, a (model, metadata) pair or a module, "
                    f"not {type(model).__name__}")


def _check_head(model: nn.Module, head: str) -> None:
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


def resolve_diameter(metadata: dict[str, Any], head: str, diameter_A: float | None = None) -> float:
    """``diameter_A`` if given, else the particle diameter the head was trained for."""
    if diameter_A is None:
        diameter_A = (metadata.get("diameters_A") or {}).get(head)
        if diameter_A is None:
            raise ValueError(f"no particle diameter: give it in Å (--diameter); the model's head {head!r} "
                             "does not record one")
    diameter_A = float(diameter_A)
    if not diameter_A > 0:
        raise ValueError(f"particle diameter must be positive, got {diameter_A} Å")
    return diameter_A


# --- the picking engine ---------------------------------------------------------------------------------

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


@dataclass
class _Loaded:
    item: MicrographInput
    prepared: Prepared | None = None
    pixel_size_A: float | None = None
    error: str | None = None


def _as_input(p: str | os.PathLike | MicrographInput) -> MicrographInput:
    if isinstance(p, MicrographInput):
        return p
    text = os.fspath(p)
    return MicrographInput(path=text, name=text)


def _ordered_prefetch(items: Sequence[Any], fn: Callable[[Any], Any], workers: int, depth: int,
                      ) -> Iterator[Any]:
    """``fn(item)`` for each item, computed ahead by ``workers`` threads, yielded in input order."""
    if not items:
        return
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="hydrapick-reader")
    pending: queue.SimpleQueue[Future] = queue.SimpleQueue()
    it = iter(items)
    try:
        for item in it:
            pending.put(pool.submit(fn, item))
            if pending.qsize() >= depth:
                break
        while not pending.empty():
            result = pending.get().result()
            nxt = next(it, None)
            if nxt is not None:
                pending.put(pool.submit(fn, nxt))
            yield result
    finally:
        while not pending.empty():
            pending.get().cancel()
        pool.shutdown(wait=True, cancel_futures=True)


def pick_micrographs(paths: Iterable[str | os.PathLike | MicrographInput], *, model=None,
                     head: str = "generic", diameter_A: float | None = None,
                     pixel_size_A: float | None = None, threshold: float | None = None,
                     min_distance_A: float | None = None, border_A: float | None = None,
                     score_floor: float = PickConfig.score_floor, device: str | torch.device = "auto",
                     batch_size: int = PickConfig.batch_size,
                     progress: Callable[[PickResult], None] | None = None,
                     max_tile_px: int | None = PickConfig.max_tile_px, num_workers: int | None = None,
                     num_threads: int | None = None, mixed_precision: bool = True,
                     tta: bool = False) -> Iterator[PickResult]:
    """Pick particles on micrographs, one `PickResult` per micrograph, in input order.

    Parameters
    ----------
    paths : iterable of path or MicrographInput
        MRC files (use `hydrapick.inputs.gather_inputs` for globs and lists).
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
        Minimum distance between picks in Å (default 0.8 x diameter).
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
    max_tile_px : int or None
        Model-scale side above which a micrograph is processed in tiles (None: never, unless out of
        memory).
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
        each micrograph (`hydrapick.inference.infer_symmetrised`). About 8x the network time; on held-out
        specimens the bundled model's AP rises by 0.01-0.04 (docs/picking.md).

    Yields
    ------
    PickResult
        A micrograph that cannot be read or picked gives a result with ``error`` set; the others go on.
    """
    items = [_as_input(p) for p in paths]
    net, metadata = _model_and_metadata(model)
    _check_head(net, head)
    cfg: ModelConfig = net.config  # type: ignore[attr-defined]
    diameter_A = resolve_diameter(metadata, head, diameter_A)
    threshold = resolve_threshold(metadata, head, threshold)
    if min_distance_A is None:
        min_distance_A = DEFAULT_MIN_DISTANCE_FRACTION * diameter_A
    if border_A is None:
        border_A = diameter_A / 2
    if min_distance_A < 0 or border_A < 0:
        raise ValueError("min_distance_A and border_A must not be negative")
    if not 0.0 <= score_floor <= 1.0:
        raise ValueError(f"score_floor must be between 0 and 1, got {score_floor}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if pixel_size_A is not None and not pixel_size_A > 0:
        raise ValueError(f"pixel size must be positive, got {pixel_size_A} Å")
    dev = resolve_device(device)
    cuda = dev.type == "cuda"
    net = net.to(dev).eval()
    preprocess = metadata.get("preprocess") or {}
    clip = float(preprocess.get("clip_percentile", PreprocessConfig().clip_percentile))
    workers = num_workers or (min(8, usable_cpu_count()) if cuda else 1)
    streams = threading.local()

    def load(item: MicrographInput) -> _Loaded:
        from .io import read_micrograph

        try:
            size = pixel_size_A if pixel_size_A is not None else item.pixel_size_A
            mic = read_micrograph(item.path, pixel_size_A=size)
            if mic.pixel_size_A is None:
                raise PickError(f"File '{item.path}' has no pixel size in its header; give one with --apix "
                                "(pixel_size_A)")
            if cuda:
                stream = getattr(streams, "stream", None)
                if stream is None:
                    stream = streams.stream = torch.cuda.Stream(dev)
                # One copy from the (memory-mapped) file into pinned memory, here in the reader thread;
                # the upload and the resampling run on the reader's own stream, overlapping the network.
                host = torch.empty(mic.shape, dtype=torch.float32, pin_memory=True)
                np.copyto(host.numpy(), mic.data, casting="unsafe")
                with torch.cuda.stream(stream):
                    image = host.to(dev, non_blocking=True)
                    if not bool(torch.isfinite(image).all()):
                        raise PickError(f"File '{item.path}' contains NaN or infinite pixel values")
                    prepared = prepare(image, mic.pixel_size_A, diameter_A, cfg, clip_percentile=clip,
                                       device=dev)
                stream.synchronize()
            else:
                # A copy: reads the memory-mapped file here, in the reader thread, into writable memory.
                data = np.array(mic.data, dtype=np.float32)
                if not np.isfinite(data).all():
                    raise PickError(f"File '{item.path}' contains NaN or infinite pixel values")
                prepared = prepare(data, mic.pixel_size_A, diameter_A, cfg, clip_percentile=clip)
            return _Loaded(item, prepared, mic.pixel_size_A)
        except Exception as exc:  # noqa: BLE001 - one bad micrograph must not stop a run of thousands
            return _Loaded(item, error=_reason(item.path, exc))

    anchors_cache: dict[tuple[int, int], torch.Tensor] = {}

    def finish(loaded: _Loaded, outputs: torch.Tensor) -> PickResult:
        from .model.anchors import anchor_centres, detect

        prep = loaded.prepared
        assert prep is not None and loaded.pixel_size_A is not None
        h, w = prep.image.shape
        if (h, w) not in anchors_cache:
            anchors_cache[(h, w)] = anchor_centres(h, w, cfg, device=outputs.device)
        scale = prep.scale_x
        centres, scores = detect(outputs.float(), anchors_cache[(h, w)], cfg,
                                 min_distance_px=min_distance_A / loaded.pixel_size_A * scale,
                                 score_floor=score_floor)
        centres, scores = centres.cpu().numpy().astype(np.float64), scores.cpu().numpy().astype(np.float64)
        picks = prep.to_original(Picks(micrograph=loaded.item.name, x=centres[:, 0], y=centres[:, 1],
                                       score=scores))
        oh, ow = prep.original_shape
        # Centres beyond the image (a decoded offset can push one out) or within the border are dropped.
        picks = picks.inside(oh, ow, border_A / loaded.pixel_size_A)
        picks.diameter_px = np.full(len(picks), diameter_A / loaded.pixel_size_A)
        return PickResult(path=loaded.item.path, name=loaded.item.name, picks=picks, threshold=threshold,
                          shape=(oh, ow), pixel_size_A=loaded.pixel_size_A)

    def run_batch(batch: list[_Loaded]) -> list[PickResult]:
        try:
            return _run_batch(batch)
        except Exception as exc:  # noqa: BLE001
            if len(batch) > 1:
                return [r for b in batch for r in run_batch([b])]
            return [PickResult(path=batch[0].item.path, name=batch[0].item.name, threshold=threshold,
                               error=_reason(batch[0].item.path, exc))]

    @torch.inference_mode()
    def _run_batch(batch: list[_Loaded]) -> list[PickResult]:
        if cuda:
            for b in batch:
                # Made on a reader's stream, used on this one: keep the allocator from reusing the memory
                # for the reader's next micrograph before the work queued here has read it.
                b.prepared.image.record_stream(torch.cuda.current_stream(dev))  # type: ignore[union-attr]
        # (N, H, W) -> (N, 1, H, W)
        images = torch.stack([b.prepared.image for b in batch])[:, None]  # type: ignore[union-attr]
        amp = torch.autocast(dev.type, dtype=half) if autocast else nullcontext()
        with amp:
            run = infer_symmetrised if tta else infer
            outputs = run(net, images.to(dev), head, max_tile_px=max_tile_px)
        return [finish(b, outputs[i]) for i, b in enumerate(batch)]

    def emit(results: list[PickResult]) -> Iterator[PickResult]:
        for r in results:
            if progress is not None:
                progress(r)
            yield r

    if cuda:
        torch.backends.cudnn.benchmark = True
    half = torch.bfloat16 if not cuda or torch.cuda.is_bf16_supported() else torch.float16
    autocast = mixed_precision and (cuda or cpu_has_native_bf16())
    with torch_threads(None if cuda else cpu_threads(num_threads)):
        pending: list[_Loaded] = []
        depth = max(2 * batch_size, 2 * workers)
        for loaded in _ordered_prefetch(items, load, workers, depth):
            if loaded.error is not None:
                yield from emit(run_batch(pending) if pending else [])
                pending = []
                yield from emit([PickResult(path=loaded.item.path, name=loaded.item.name, threshold=threshold,
                                            error=loaded.error)])
                continue
            if pending and (len(pending) >= batch_size
                            or pending[0].prepared.image.shape != loaded.prepared.image.shape):  # type: ignore
                yield from emit(run_batch(pending))
                pending = []
            pending.append(loaded)
        if pending:
            yield from emit(run_batch(pending))


def _reason(path: str, exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if path not in text:
        text = f"File '{path}': {text}"
    return text if len(text) <= 300 else text[:297] + "..."


# --- runs: inputs to output files -----------------------------------------------------------------------

PREVIEW_COUNT = 3


@dataclass
class PickProgress:
    """Progress of a `pick` run, passed to its ``progress`` callback (first with ``result=None``)."""

    done: int
    total: int
    picks: int
    failed: int
    result: PickResult | None = None


@dataclass
class PickReport:
    """What a `pick` run did.

    Attributes
    ----------
    picks : Picks
        Picks at or above the threshold, on every micrograph of the run (skipped ones read back).
    candidates : Picks
        Every candidate above the score floor, on the micrographs picked in this run.
    threshold : float
    n_micrographs : int
        Micrographs in this run (after sharding), whether picked, skipped or failed.
    n_skipped : int
        Micrographs whose outputs already existed (``skip_existing``).
    failures : list of (path, reason)
    seconds : float
    outputs : list of Path
        Main output files or folders written.
    shard : (index, count) or None
    """

    picks: Picks
    candidates: Picks
    threshold: float
    n_micrographs: int
    n_skipped: int
    failures: list[tuple[str, str]]
    seconds: float
    outputs: list[Path]
    shard: tuple[int, int] | None = None

    @property
    def n_failed(self) -> int:
        return len(self.failures)

    @property
    def n_picked(self) -> int:
        """Micrographs picked in this run."""
        return self.n_micrographs - self.n_skipped - self.n_failed

    @property
    def micrographs_per_second(self) -> float:
        return self.n_picked / self.seconds if self.seconds > 0 else 0.0


def pick(micrographs: str | os.PathLike | Iterable[str | os.PathLike | MicrographInput],
         output: str | os.PathLike | None = None, *, format: str | None = None, model=None,
         head: str = "generic", diameter_A: float | None = None, pixel_size_A: float | None = None,
         threshold: float | None = None, min_distance_A: float | None = None, border_A: float | None = None,
         score_floor: float = PickConfig.score_floor, device: str | torch.device = "auto",
         batch_size: int = PickConfig.batch_size, shard: tuple[int, int] | str | None = None,
         skip_existing: bool = False, preview_dir: str | os.PathLike | None = None,
         preview_count: int = PREVIEW_COUNT, max_tile_px: int | None = PickConfig.max_tile_px,
         num_threads: int | None = None, mixed_precision: bool = True, tta: bool = False,
         progress: Callable[[PickProgress], None] | None = None) -> PickReport:
    """Pick micrographs and write the results: what ``hydrapick pick`` does, from Python.

    Parameters
    ----------
    micrographs : path, glob, list file, or iterable of them
        See `hydrapick.inputs.gather_inputs` (MRC files, globs, folders, RELION micrographs STAR,
        text lists).
    output : path, optional
        Where to write: ``x.star`` (combined STAR, default format), ``x.txt`` (Topaz), ``x.cs``
        (cryoSPARC), or a folder (RELION job folder, or EMAN .box files with ``format="box"``). Every
        candidate above ``score_floor`` also goes to ``x_candidates.<ext>`` (files) or to per-micrograph
        files under ``<folder>/candidates/`` (plus ``<folder>/candidates.star`` for a job folder), so
        picks can be re-thresholded later. None: write nothing.
    format : str, optional
        One of `hydrapick.pick_outputs.PICK_FORMATS`; default from ``output``.
    shard : (K, N) or "K/N", optional
        Pick only every N-th micrograph starting at K (0-based); all shards together cover the input
        once. Folder outputs are shared by the shards; combined files get a ``.shardKofN`` suffix.
    skip_existing : bool
        Folder outputs only: micrographs whose output files exist are not picked again (their picks are
        read back), so an interrupted run continues where it stopped.
    preview_dir : path, optional
        Write PNG overlays of the first ``preview_count`` picked micrographs there.
    progress : callable, optional
        Called with a `PickProgress` before the first micrograph and after each one.

    Other parameters are those of `pick_micrographs`.

    Returns
    -------
    PickReport
        Failed micrographs are listed in ``failures`` (the run goes on without them).
    """
    started = time.perf_counter()
    if isinstance(micrographs, (str, os.PathLike, MicrographInput)):
        micrographs = [micrographs]
    items: list[MicrographInput] = []
    for m in micrographs:
        items += [m] if isinstance(m, MicrographInput) else gather_inputs([m])
    # The same file named twice (a glob and a list, say) is picked once, where it first appears.
    seen: set[str] = set()
    items = [it for it in items
             if not (os.path.abspath(it.path) in seen or seen.add(os.path.abspath(it.path)))]
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if shard is not None:
        items = select_shard(items, *shard)
    net, metadata = _model_and_metadata(model)
    _check_head(net, head)
    threshold = resolve_threshold(metadata, head, threshold)
    diameter_A = resolve_diameter(metadata, head, diameter_A)

    outputs = None
    if output is not None:
        outputs = PickOutputs(output, output_format(output, format), items, shard)
        if skip_existing and not outputs.folder:
            raise ValueError("skip_existing needs a folder output (--format relion or box): combined files "
                             "are only written at the end of a run")
    elif skip_existing:
        raise ValueError("skip_existing needs an output folder")

    skipped: list[MicrographInput] = []
    todo = items
    if skip_existing and outputs is not None:
        skipped = [it for it in items if outputs.exists(it)]
        done_names = {it.name for it in skipped}
        todo = [it for it in items if it.name not in done_names]
        if skipped:
            log.info("skipping %d micrograph(s) with existing outputs", len(skipped))

    total = len(todo)
    results: list[PickResult] = []
    failures: list[tuple[str, str]] = []
    n_picks = 0
    previews = 0
    if progress is not None:
        progress(PickProgress(0, total, 0, 0, None))
    for result in pick_micrographs(todo, model=(net, metadata), head=head, diameter_A=diameter_A,
                                   pixel_size_A=pixel_size_A, threshold=threshold,
                                   min_distance_A=min_distance_A, border_A=border_A, score_floor=score_floor,
                                   device=device, batch_size=batch_size, max_tile_px=max_tile_px,
                                   num_threads=num_threads, mixed_precision=mixed_precision, tta=tta):
        if result.ok:
            if outputs is not None:
                outputs.write_micrograph(result)
            n_picks += len(result.selected)
            results.append(result)
            if preview_dir is not None and previews < preview_count:
                previews += 1
                try:
                    write_preview(result, preview_dir)
                except Exception as exc:  # noqa: BLE001 - a preview is never worth losing picks over
                    log.warning("no preview for %s: %s", result.name, exc)
        else:
            # Reported through the result and the report (the command lists them); logged for libraries.
            log.info("not picked: %s", result.error)
            failures.append((result.path, result.error or "unknown error"))
        if progress is not None:
            progress(PickProgress(len(results) + len(failures), total, n_picks, len(failures), result))

    parts = [r.selected for r in results]
    if skipped and outputs is not None:
        parts += [outputs.read_back(it) for it in skipped]
    picks = Picks.concat(parts)
    candidates = Picks.concat(r.picks for r in results)
    written: list[Path] = []
    if outputs is not None:
        picked = {r.name for r in results} | {it.name for it in skipped}
        names = [it.name for it in items if it.name in picked]
        if skipped and outputs.format == "relion" and not outputs.sharded:
            from .io import read_coordinates

            earlier = [read_coordinates(outputs.candidates_file(it), "star", micrograph=it.name)
                       for it in skipped]
            candidates = Picks.concat([candidates] + [p.with_micrograph(it.name)
                                                      for p, it in zip(earlier, skipped, strict=True)])
        written = outputs.finish(picks, candidates, results, names)
    return PickReport(picks=picks, candidates=Picks.concat(r.picks for r in results), threshold=threshold,
                      n_micrographs=len(items), n_skipped=len(skipped), failures=failures,
                      seconds=time.perf_counter() - started, outputs=written, shard=shard)
