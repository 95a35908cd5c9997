"""A whole pick run as a library function: what ``hydrapick pick`` does, from Python.

`pick` (also ``hydrapick.pick``) gathers the inputs (`hydrapick.io.inputs.gather_inputs`), takes this
job's shard (`hydrapick.picking.shards`), runs the engine (`hydrapick.picking.engine.pick_micrographs`),
and writes every output atomically in the chosen format with the candidates beside the picks
(`hydrapick.picking.outputs`), continuing an interrupted run with ``skip_existing``; it returns a
`PickReport`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import MAX_TILE_PX, PICK_BATCH_SIZE, PICK_HEAD, PREVIEW_COUNT, SCORE_FLOOR, AdaptConfig
from ..io.inputs import MicrographInput, gather_inputs
from ..picks import Picks
from ..preprocess import check_particle_size
from .engine import (
    PickResult,
    check_head,
    model_and_metadata,
    pick_micrographs,
    resolve_diameter,
    resolve_threshold,
)
from .outputs import PickOutputs, output_format, pick_settings, write_preview
from .scales import parse_scales
from .shards import parse_shard, select_shard

log = logging.getLogger(__name__)


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
    adaptation: dict | None = None  # what `adapt` learnt and whether its head was used

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
         head: str = PICK_HEAD, diameter_A: float | None = None, pixel_size_A: float | None = None,
         threshold: float | None = None, min_distance_A: float | None = None, border_A: float | None = None,
         score_floor: float = SCORE_FLOOR, device: str | torch.device = "auto",
         batch_size: int = PICK_BATCH_SIZE, shard: tuple[int, int] | str | None = None,
         skip_existing: bool = False, preview_dir: str | os.PathLike | None = None,
         preview_count: int = PREVIEW_COUNT, max_tile_px: int | str | None = MAX_TILE_PX,
         num_threads: int | None = None, mixed_precision: bool = True, tta: bool = False,
         scales: str | float | Sequence[float] | None = None,
         adapt: bool | AdaptConfig = False, adapt_output: str | os.PathLike | None = None,
         progress: Callable[[PickProgress], None] | None = None,
         adapt_progress: Callable | None = None) -> PickReport:
    """Pick micrographs and write the results: what ``hydrapick pick`` does, from Python.

    Parameters
    ----------
    micrographs : path, glob, list file, or iterable of them
        See `hydrapick.io.inputs.gather_inputs` (MRC files, globs, folders, RELION micrographs STAR,
        text lists).
    output : path, optional
        Where to write: ``x.star`` (combined STAR, default format), ``x.txt`` (Topaz), ``x.cs``
        (cryoSPARC), or a folder (RELION job folder, or EMAN .box files with ``format="box"``). Every
        candidate above ``score_floor`` also goes to ``x_candidates.<ext>`` (files) or to per-micrograph
        files under ``<folder>/candidates/`` (plus ``<folder>/candidates.star`` for a job folder), so
        picks can be re-thresholded later. None: write nothing.
    format : str, optional
        One of `hydrapick.picking.outputs.PICK_FORMATS`; default from ``output``.
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
    adapt : bool or AdaptConfig
        First learn a head for this dataset from its own micrographs, without labels
        (`hydrapick.training.adapt`), and pick with it when its self-check passes (else with the
        generic head; ``PickReport.adaptation`` says which and why). An `AdaptConfig` sets how.
    adapt_output : path, optional
        Save the model with its ``adapted`` head there, to pick the rest of a dataset with
        ``model=adapt_output, head="adapted"`` without adapting again.
    adapt_progress : callable, optional
        Receives the adaptation's `hydrapick.training.TrainEvent`s.

    Other parameters are those of `hydrapick.picking.engine.pick_micrographs`.

    Returns
    -------
    PickReport
        Failed micrographs are listed in ``failures`` (the run goes on without them).
    """
    started = time.perf_counter()
    if isinstance(micrographs, (str, os.PathLike, MicrographInput)):
        micrographs = [micrographs]
    specs = list(micrographs)
    # The same file named twice (a glob and a list, say) is picked once, where it first appears; no
    # micrographs at all is an empty run, not an error.
    items = gather_inputs(specs) if specs else []
    if isinstance(shard, str):
        shard = parse_shard(shard)
    if shard is not None:
        items = select_shard(items, *shard)
    net, metadata = model_and_metadata(model)
    check_head(net, head)
    threshold_given = threshold is not None
    threshold = resolve_threshold(metadata, head, threshold)
    diameter_A = resolve_diameter(metadata, head, diameter_A)
    scales = parse_scales(scales)
    _check_particle_size(items, [diameter_A * r for r in scales], pixel_size_A, net.config)

    outputs = None
    if output is not None:
        outputs = PickOutputs(output, output_format(output, format), items, shard)
        outputs.check_not_inputs(specs, items)
        if skip_existing and not outputs.folder:
            raise ValueError("skip_existing needs a folder output (--format relion or box): combined files "
                             "are only written at the end of a run")
    elif skip_existing:
        raise ValueError("skip_existing needs an output folder")

    # Every output writable and this run the only one writing it, checked before the first micrograph.
    with outputs.claim() if outputs is not None else contextlib.nullcontext():
        adaptation = None
        if adapt:
            net, metadata, head, threshold, adaptation = adapt_for_run(
                net, metadata, head, threshold, items, diameter_A, pixel_size_A,
                adapt if isinstance(adapt, AdaptConfig) else AdaptConfig(), device, num_threads,
                adapt_output, adapt_progress, user_threshold=threshold_given)
        if outputs is not None:
            outputs.record_settings(pick_settings(
                net, head, diameter_A=diameter_A, threshold=threshold, scales=scales, tta=tta,
                min_distance_A=min_distance_A, border_A=border_A, pixel_size_A=pixel_size_A,
                model_source=str(adapt_output) if adaptation and adaptation.get("saved") else
                (os.fspath(model) if isinstance(model, (str, os.PathLike)) else None)),
                items, continuing=skip_existing)
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
                                       min_distance_A=min_distance_A, border_A=border_A,
                                       score_floor=score_floor, device=device, batch_size=batch_size,
                                       max_tile_px=max_tile_px, num_threads=num_threads,
                                       mixed_precision=mixed_precision, tta=tta, scales=scales):
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
                from ..io import read_coordinates

                earlier = [read_coordinates(outputs.candidates_file(it), "star", micrograph=it.name)
                           for it in skipped]
                candidates = Picks.concat([candidates] + [p.with_micrograph(it.name)
                                                          for p, it in zip(earlier, skipped, strict=True)])
            written = outputs.finish(picks, candidates, results, names)
        return PickReport(picks=picks, candidates=Picks.concat(r.picks for r in results), threshold=threshold,
                          n_micrographs=len(items), n_skipped=len(skipped), failures=failures,
                          seconds=time.perf_counter() - started, outputs=written, shard=shard,
                          adaptation=adaptation)


def _check_particle_size(items: list[MicrographInput], diameters_A: Sequence[float],
                         pixel_size_A: float | None, config) -> None:
    """A diameter or pixel size off by a unit fails here, in one line, rather than once per micrograph
    after minutes of resampling: each diameter picked at (one per scale) checked with the pixel size
    given, else the first micrograph's (its header read once)."""
    size = pixel_size_A if pixel_size_A is not None else next(
        (it.pixel_size_A for it in items if it.pixel_size_A is not None), None)
    if size is None and items:
        from ..io import FormatError, read_micrograph

        try:
            size = read_micrograph(items[0].path).pixel_size_A
        except (FormatError, ValueError, OSError):
            return  # reported with the micrograph when it is picked
    if size is not None:
        for diameter_A in diameters_A:
            check_particle_size(diameter_A, size, config)


def adapt_for_run(net, metadata, head, threshold, items, diameter_A, pixel_size_A, config, device,
                  num_threads, adapt_output, progress, *, user_threshold: bool):
    """Run `hydrapick.training.adapt.adapt` on ``items`` (pick's and watch's adaptation step); the model,
    metadata, head and threshold to pick with, and the adaptation report."""
    from ..checkpoint import save_checkpoint
    from ..device import resolve_device, torch_threads
    from ..io import read_micrograph
    from ..io.atomic import check_writable
    from ..io.mrc import no_pixel_size
    from ..training.adapt import adapt, spread

    if head != PICK_HEAD:
        raise ValueError(f"adaptation starts from the generic head; got head '{head}'")
    if adapt_output is not None:
        check_writable(adapt_output)
    if not items:
        return net, metadata, head, threshold, None
    chosen = []
    # Only the micrographs adaptation learns from need their pixel size (a header read each).
    for item in spread(items, config.micrographs):
        size = pixel_size_A or item.pixel_size_A or read_micrograph(item.path).pixel_size_A
        if not size:
            raise ValueError(f"{no_pixel_size(item.path)}; give --apix")
        chosen.append((item.path, item.name, float(size)))
    with torch_threads(num_threads):
        result = adapt(net, metadata, chosen, diameter_A, config=config, device=resolve_device(device),
                       progress=progress)
    if result.kept and adapt_output is not None:
        save_checkpoint(adapt_output, result.model, result.metadata)
        result.report["saved"] = str(adapt_output)
    pick_threshold = threshold if user_threshold else result.threshold
    return result.model, result.metadata, result.head, pick_threshold, result.report
