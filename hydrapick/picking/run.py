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
from .calibrate import CALIBRATION_FILE, ScaleCalibration, calibrate_scale
from .engine import (
    PickResult,
    check_head,
    model_and_metadata,
    optional_diameter,
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
    calibration: ScaleCalibration | None = None  # the diameter picked at and how it was chosen

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
         calibrate: bool = True, calibration: ScaleCalibration | str | os.PathLike | None = None,
         progress: Callable[[PickProgress], None] | None = None,
         adapt_progress: Callable | None = None,
         calibrate_progress: Callable[[int, int], None] | None = None) -> PickReport:
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
    calibrate : bool
        Measure the particle's scale on a few micrographs first (`hydrapick.picking.calibrate`) and pick
        at the diameter it finds, searching half to twice ``diameter_A`` (50-600 Å when no diameter is
        given or recorded in the head). False picks at ``diameter_A`` exactly.
        ``PickReport.calibration`` says what was chosen and how; folder outputs keep it in
        ``scale_calibration.json`` and a continuation (``skip_existing``) reuses it.
    calibration : ScaleCalibration or path, optional
        A calibration to reuse instead of measuring (e.g. the ``scale_calibration.json`` of an earlier
        run or of a ``hydrapick calibrate`` step shared by SLURM shards).
    calibrate_progress : callable, optional
        Called with (rungs done, rungs planned) while calibrating.

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
    run_items = items  # the whole run: every shard calibrates on the same micrographs, so all agree
    if shard is not None:
        items = select_shard(items, *shard)
    net, metadata = model_and_metadata(model)
    check_head(net, head)
    threshold_given = threshold is not None
    threshold = resolve_threshold(metadata, head, threshold)
    typed_diameter_A = optional_diameter(metadata, head, diameter_A)
    if typed_diameter_A is None and not calibrate and calibration is None:
        resolve_diameter(metadata, head, None)  # raises: no diameter to pick at
    scales = parse_scales(scales)
    if typed_diameter_A is not None:
        _check_particle_size(items, [typed_diameter_A * r for r in scales], pixel_size_A, net.config)

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
        scale = choose_scale(run_items, outputs, net, metadata, head, typed_diameter_A, pixel_size_A,
                             calibrate=calibrate, calibration=calibration, continuing=skip_existing,
                             device=device, num_threads=num_threads, mixed_precision=mixed_precision,
                             progress=calibrate_progress)
        diameter_A = scale.diameter_A
        if scale.method != "typed":
            _check_particle_size(items, [diameter_A * r for r in scales], pixel_size_A, net.config)
        adaptation = None
        if adapt:
            net, metadata, head, threshold, adaptation = adapt_for_run(
                net, metadata, head, threshold, items, diameter_A, pixel_size_A,
                adapt if isinstance(adapt, AdaptConfig) else AdaptConfig(), device, num_threads,
                adapt_output, adapt_progress, user_threshold=threshold_given)
        if outputs is not None:
            outputs.record_settings(pick_settings(
                net, head, diameter_A=diameter_A, threshold=threshold, scales=scales, tta=tta,
                calibrated_scale=scale.factor if scale.method == "calibrated" else None,
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
                          adaptation=adaptation, calibration=scale)


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
    from ..io.atomic import check_writable
    from ..training.adapt import adapt, readable_micrographs

    if adapt_output is not None:
        check_writable(adapt_output)
    if not items:
        return net, metadata, head, threshold, None
    # Only the micrographs adaptation learns from are read here (an unreadable one is left out).
    chosen = readable_micrographs(items, config.micrographs, pixel_size_A)
    with torch_threads(num_threads):
        result = adapt(net, metadata, chosen, diameter_A, config=config, device=resolve_device(device),
                       progress=progress, base=head)
    if result.kept and adapt_output is not None:
        save_checkpoint(adapt_output, result.model, result.metadata)
        result.report["saved"] = str(adapt_output)
    pick_threshold = threshold if user_threshold else result.threshold
    return result.model, result.metadata, result.head, pick_threshold, result.report


def calibration_path(outputs: PickOutputs | None) -> Path | None:
    """Where a run keeps its scale calibration: in a folder output, or beside a combined file."""
    if outputs is None:
        return None
    if outputs.folder:
        return outputs.path / CALIBRATION_FILE
    return outputs.path.with_name(f"{outputs.path.stem}_{CALIBRATION_FILE}")


def choose_scale(items: Sequence[MicrographInput], outputs: PickOutputs | None, net, metadata, head: str,
                 typed_diameter_A: float | None, pixel_size_A: float | None, *, calibrate: bool,
                 calibration: ScaleCalibration | str | os.PathLike | None, continuing: bool, device,
                 num_threads: int | None, mixed_precision: bool,
                 progress: Callable[[int, int], None] | None) -> ScaleCalibration:
    """The diameter a run picks at (`pick`'s and watch's calibration step), kept beside the outputs.

    In order: a calibration given; the one an output folder recorded, when continuing (a restart must pick
    the rest at the diameter the first part was picked at); the typed diameter when ``calibrate`` is off;
    else a new calibration on ``items`` (the whole run, before sharding).
    """
    path = calibration_path(outputs)
    if calibration is not None:
        chosen = (calibration if isinstance(calibration, ScaleCalibration)
                  else ScaleCalibration.load(calibration))
        _check_reused(chosen, typed_diameter_A, "the calibration given")
    elif continuing and path is not None and path.is_file():
        chosen = ScaleCalibration.load(path)
        _check_reused(chosen, typed_diameter_A, f"the calibration recorded in '{path}'")
        if not calibrate and chosen.method != "typed" and chosen.diameter_A != typed_diameter_A:
            raise ValueError(f"'{path.parent}' was picked at the measured diameter {chosen.diameter_A:.1f} Å "
                             f"({path.name}); continuing without calibration would pick the rest at "
                             f"{typed_diameter_A:g} Å: continue with calibration on, or re-pick into a new "
                             "output")
        log.info("reusing %s: %s", path, chosen.summary())
        return chosen
    elif not calibrate or not items:
        if typed_diameter_A is None:
            raise ValueError("no particle diameter: give --diameter, or let the picker measure it (leave "
                             "calibration on)")
        chosen = ScaleCalibration(typed_diameter_A, typed_diameter_A, "typed")
    else:
        chosen = calibrate_scale(items, model=(net, metadata), head=head, diameter_A=typed_diameter_A,
                                 pixel_size_A=pixel_size_A, device=device, num_threads=num_threads,
                                 mixed_precision=mixed_precision, progress=progress)
    log.info("%s", chosen.summary())
    if path is not None:
        chosen.save(path)
    return chosen


def _check_reused(chosen: ScaleCalibration, typed_diameter_A: float | None, where: str) -> None:
    if typed_diameter_A is not None and chosen.typed_diameter_A is not None and \
            abs(chosen.typed_diameter_A - typed_diameter_A) > 1e-6 * typed_diameter_A:
        raise ValueError(f"{where} was made for a typed diameter of {chosen.typed_diameter_A:g} Å, not "
                         f"{typed_diameter_A:g} Å: re-pick into a new output, or type the same diameter")
