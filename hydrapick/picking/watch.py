"""Picking while data arrives: watch a folder or glob and pick each micrograph once it is complete.

`watch` polls a folder or glob (``hydrapick pick DIR_OR_GLOB --watch``). A micrograph is picked once its
size and modification time are the same at two polls in a row (so a file still being copied is left
alone), into a job folder (RELION or .box), through `hydrapick.picking.run.pick` with ``skip_existing``:
every micrograph's files are written as soon as it is picked, the folder's index (``autopick.star``) is
rewritten atomically after each batch with every micrograph done so far, a micrograph with outputs is
never picked again, and a restarted watch continues from what is on disk. It stops when
``timeout_s`` pass without anything new, or when ``RELION_JOB_ABORT_NOW`` appears in the output folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..config import PICK_HEAD, AdaptConfig
from ..io.inputs import InputError, MicrographInput, gather_inputs, micrograph_files
from ..io.relion_pipeline import abort_requested
from ..training.adapt import ADAPTED_HEAD
from .engine import model_and_metadata, resolve_diameter
from .outputs import PickOutputs, output_format
from .run import PickProgress, adapt_for_run, pick

log = logging.getLogger(__name__)

WATCH_FORMATS = ("relion", "box")


@dataclass
class WatchProgress:
    """The live state of a `watch`, passed to its ``progress`` callback after each micrograph.

    ``done`` counts every micrograph with outputs in the folder (earlier runs included), ``picks`` their
    picks; ``picked`` and ``seconds`` are this session's, for the rate.
    """

    done: int
    picks: int
    failed: int
    picked: int
    seconds: float
    name: str | None = None
    n_picks: int | None = None
    error: str | None = None

    @property
    def picks_per_micrograph(self) -> float:
        return self.picks / self.done if self.done else 0.0

    @property
    def micrographs_per_minute(self) -> float:
        return 60.0 * self.picked / self.seconds if self.seconds > 0 else 0.0


@dataclass
class WatchReport:
    """What a `watch` did: ``stopped`` is ``"timeout"``, ``"abort"`` or ``"polls"`` (``max_polls``)."""

    done: int
    picks: int
    picked: int
    skipped: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = "timeout"
    output: Path | None = None
    adaptation: dict | None = None  # what `--adapt` learnt on the first micrographs, if it ran


class _Stop(Exception):
    """Raised from pick's progress callback when the abort file appears (pick stops between micrographs)."""


def watch(spec: str | os.PathLike, output: str | os.PathLike, *, format: str | None = None, model=None,
          poll_s: float = 5.0, timeout_s: float | None = 3600.0, max_polls: int | None = None,
          progress: Callable[[WatchProgress], None] | None = None, adapt: AdaptConfig | None = None,
          adapt_output: str | os.PathLike | None = None, **pick_options) -> WatchReport:
    """Pick micrographs matching ``spec`` as they appear, until nothing new comes for ``timeout_s``.

    Parameters
    ----------
    spec : path or glob
        A folder (its MRC files) or a glob (``Movies/*.mrc``; ``**`` recurses); it may match nothing yet.
    output : path
        The job folder (``format`` ``"relion"``, the default, or ``"box"``).
    poll_s : float
        Seconds between looks at the folder; a micrograph is picked at the second look that finds it
        unchanged.
    timeout_s : float or None
        Stop when this long passes without a new or growing micrograph (None: never).
    max_polls : int, optional
        Stop after this many looks (tests, cron-like use).
    progress : callable, optional
        Called with a `WatchProgress` after each micrograph.
    adapt : AdaptConfig, optional
        Adapt once (`hydrapick.picking.run.pick`'s ``adapt``) on the first ``adapt.micrographs``
        micrographs to arrive (fewer when the arrivals pause first), save the adapted model to
        ``adapt_output`` (default ``<output>/adapted.pt``) and pick everything with it; a restarted
        watch reuses that file instead of adapting again.
    **pick_options
        Passed to `hydrapick.picking.run.pick` (``head``, ``diameter_A``, ``threshold``, ``device`` ...).

    Returns
    -------
    WatchReport
    """
    fmt = output_format(output, format)
    if fmt not in WATCH_FORMATS:
        raise ValueError(f"watching writes a job folder; use --format relion or box, not {fmt}")
    if "skip_existing" in pick_options or "shard" in pick_options:
        raise ValueError("watch always continues from the folder's outputs and does not shard")
    output = Path(output)
    net_meta = model_and_metadata(model)  # loaded once for the whole session
    adapted_path = Path(adapt_output) if adapt_output is not None else output / "adapted.pt"
    if adapt is not None and adapted_path.exists():
        net_meta = model_and_metadata(str(adapted_path))
        pick_options = {**pick_options, "head": ADAPTED_HEAD}
        adapt = None
    started = time.monotonic()
    last_activity = started
    seen: dict[str, tuple[int, int]] = {}
    failed: dict[str, tuple[int, int]] = {}
    done: list[MicrographInput] = []
    done_paths: set[str] = set()
    report = WatchReport(done=0, picks=0, picked=0, skipped=0, output=output)
    polls = 0
    while True:
        if abort_requested(output):
            report.stopped = "abort"
            break
        current = _stat_all(spec)
        if set(current) != set(seen) or any(seen.get(p) != s for p, s in current.items()):
            last_activity = time.monotonic()
        ready = [p for p, s in current.items()
                 if p not in done_paths and s[0] > 0 and seen.get(p) == s and failed.get(p) != s]
        paused = current == seen
        seen = current
        if ready and adapt is not None and len(ready) < adapt.micrographs and not paused:
            ready = []  # wait for enough micrographs to adapt on, unless the arrivals have paused
        if ready and adapt is not None:
            # Adapt once on the first arrivals (nothing is picked twice: they are picked below with
            # the rest), then pick everything with the adapted head when its self-check passed.
            net, meta = net_meta
            head = pick_options.get("head", PICK_HEAD)
            opts = pick_options
            net, meta, head, _, report.adaptation = adapt_for_run(
                net, meta, head, None, gather_inputs(ready)[:adapt.micrographs],
                resolve_diameter(meta, head, opts.get("diameter_A")), opts.get("pixel_size_A"), adapt,
                opts.get("device", "auto"), opts.get("num_threads"), adapted_path, None, user_threshold=True)
            net_meta = (net, meta)
            pick_options = {**pick_options, "head": head}
            adapt = None
        if ready:
            new = gather_inputs(ready)
            stopped = _pick_batch(done, new, output, fmt, net_meta, report, started, failed, current,
                                  progress, pick_options)
            done_paths.update(it.path for it in done)
            last_activity = time.monotonic()
            if stopped:
                report.stopped = "abort"
                break
        polls += 1
        if max_polls is not None and polls >= max_polls:
            report.stopped = "polls"
            break
        if timeout_s is not None and time.monotonic() - last_activity >= timeout_s:
            report.stopped = "timeout"
            break
        time.sleep(poll_s)
    report.seconds = time.monotonic() - started
    return report


def _pick_batch(done: list[MicrographInput], new: list[MicrographInput], output: Path, fmt: str, net_meta,
                report: WatchReport, started: float, failed: dict[str, tuple[int, int]],
                sizes: dict[str, tuple[int, int]], progress, pick_options: dict) -> bool:
    """Pick ``new`` into ``output`` beside ``done``; returns True when stopped by the abort file."""
    items = done + new
    earlier = len(done)
    base_done, base_picks = report.done, report.picks

    def each(event: PickProgress) -> None:
        if event.result is not None:
            result = event.result
            if result.ok:
                report.picked += 1
            if progress is not None:
                progress(WatchProgress(done=base_done + event.done - event.failed,
                                       picks=base_picks + event.picks, failed=len(report.failures)
                                       + event.failed, picked=report.picked,
                                       seconds=time.monotonic() - started, name=result.name,
                                       n_picks=len(result.selected) if result.ok else None,
                                       error=result.error))
        if abort_requested(output):
            raise _Stop

    try:
        run = pick(items, output, format=fmt, model=net_meta, skip_existing=True, progress=each,
                   **pick_options)
    except _Stop:
        # Index what was finished (each picked micrograph's files are on disk already), then stop.
        outputs = PickOutputs(output, fmt, items, None)
        finished = [it for it in items if outputs.exists(it)]
        done[:] = finished
        if finished:
            run = pick(finished, output, format=fmt, model=net_meta, skip_existing=True, **pick_options)
            report.done, report.picks = run.n_micrographs, len(run.picks)
        return True
    bad = {path for path, _ in run.failures}
    for path, reason in run.failures:
        failed[path] = sizes.get(path, (0, 0))  # tried again only if the file changes
        report.failures.append((path, reason))
    done[:] = [it for it in items if it.path not in bad]
    report.skipped += run.n_skipped - earlier  # new micrographs whose outputs an earlier run wrote
    report.done, report.picks = len(done), len(run.picks)
    if progress is not None:
        progress(WatchProgress(done=report.done, picks=report.picks, failed=len(report.failures),
                               picked=report.picked, seconds=time.monotonic() - started))
    return False


def _stat_all(spec: str | os.PathLike) -> dict[str, tuple[int, int]]:
    """``{path: (size, mtime_ns)}`` of the micrographs matching ``spec`` now (empty when none yet)."""
    try:
        paths = micrograph_files(spec)
    except InputError:
        return {}
    out = {}
    for path in paths:
        try:
            st = os.stat(path)
        except OSError:  # removed between the listing and the stat
            continue
        out[path] = (st.st_size, st.st_mtime_ns)
    return out
