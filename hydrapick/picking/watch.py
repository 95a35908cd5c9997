"""Picking while data arrives: watch a folder, glob or micrographs list; pick each micrograph once complete.

`watch` polls a folder or glob (``hydrapick pick DIR_OR_GLOB --watch``; hidden ``.name.mrc`` files, which
copy tools rename when complete, are left out), or follows a micrographs list that grows (a RELION
``micrographs_ctf.star``, or a text list; `hydrapick.picking.arrivals`). A micrograph is picked once its
size and modification time are the same at two polls in a row (so a file still being copied is left alone),
into a job folder (RELION or .box), through `hydrapick.picking.run.pick` with ``skip_existing``: every
micrograph's files are written as soon as it is picked, the folder's index (``autopick.star``) is rewritten
atomically after each batch with every micrograph done so far, a micrograph with outputs is not picked
again, and a restarted watch continues from what is on disk. A micrograph whose size or modification time
changes after it was picked (a stalled copy that resumed, a file replaced), or that is newer than the picks
an earlier session wrote for it, is picked again, with a warning; one that could not be read is tried again
whenever its file changes (its status change time included, so a ``chmod`` counts), and the failures
reported are those left at the end. The session holds the folder's lock from start to end. It stops when
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
from ..io import FormatError, read_micrograph
from ..io.atomic import check_writable
from ..io.inputs import MicrographInput
from ..io.lock import output_lock
from ..io.relion_pipeline import abort_requested
from ..training.adapt import ADAPTED_HEAD
from .arrivals import Arrivals, FileStat, check_watchable
from .calibrate import CALIBRATION_FILE, CALIBRATION_MICROGRAPHS, ScaleCalibration
from .engine import model_and_metadata, optional_diameter
from .outputs import PickOutputs, output_format
from .results import failure_reason
from .run import PickProgress, adapt_for_run, choose_scale, pick

log = logging.getLogger(__name__)

WATCH_FORMATS = ("relion", "box")

_Ready = list[tuple[MicrographInput, FileStat]]


@dataclass
class WatchProgress:
    """The live state of a `watch`, passed to its ``progress`` callback after each micrograph.

    ``done`` counts every micrograph with outputs in the folder (earlier runs included), ``picks`` their
    picks, ``failed`` the micrographs failing now; ``picked`` and ``seconds`` are this session's, for the
    rate. ``again``: this micrograph was picked before and changed since.
    """

    done: int
    picks: int
    failed: int
    picked: int
    seconds: float
    name: str | None = None
    n_picks: int | None = None
    error: str | None = None
    again: bool = False

    @property
    def picks_per_micrograph(self) -> float:
        return self.picks / self.done if self.done else 0.0

    @property
    def micrographs_per_minute(self) -> float:
        return 60.0 * self.picked / self.seconds if self.seconds > 0 else 0.0


@dataclass
class WatchReport:
    """What a `watch` did: ``stopped`` is ``"timeout"``, ``"abort"`` or ``"polls"`` (``max_polls``).

    ``picked`` counts the micrographs picked in this session (each once, however often it changed);
    ``failures`` are those still unreadable at the end; ``repicked`` names the micrographs picked again
    because their file changed after they were picked.
    """

    done: int
    picks: int
    picked: int
    skipped: int
    failures: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    stopped: str = "timeout"
    output: Path | None = None
    adaptation: dict | None = None  # what `--adapt` learnt on the first micrographs, if it ran
    repicked: list[str] = field(default_factory=list)
    calibration: ScaleCalibration | None = None  # the diameter picked at and how it was chosen


class _Stop(Exception):
    """Raised from pick's progress callback when the abort file appears (pick stops between micrographs)."""


def watch(spec: str | os.PathLike, output: str | os.PathLike, *, format: str | None = None, model=None,
          poll_s: float = 5.0, timeout_s: float | None = 3600.0, max_polls: int | None = None,
          progress: Callable[[WatchProgress], None] | None = None, adapt: AdaptConfig | None = None,
          adapt_output: str | os.PathLike | None = None, adapt_progress: Callable | None = None,
          **pick_options) -> WatchReport:
    """Pick micrographs matching ``spec`` as they appear, until nothing new comes for ``timeout_s``.

    Parameters
    ----------
    spec : path or glob
        A folder (its MRC files), a glob (``Movies/*.mrc``; ``**`` recurses), or a micrographs list
        (RELION STAR or text) that grows; it may match nothing yet. Not a single micrograph.
    output : path
        The job folder (``format`` ``"relion"``, the default, or ``"box"``). It is locked for the whole
        session: another run into it is refused.
    poll_s : float
        Seconds between looks at the folder; a micrograph is picked at the second look that finds it
        unchanged.
    timeout_s : float or None
        Stop when this long passes without a new or changing micrograph (None: never).
    max_polls : int, optional
        Stop after this many looks (tests, cron-like use).
    progress : callable, optional
        Called with a `WatchProgress` after each micrograph.
    adapt : AdaptConfig, optional
        Adapt once (`hydrapick.picking.run.pick`'s ``adapt``) when ``adapt.micrographs`` micrographs have
        arrived (nothing is picked before), save the adapted model to ``adapt_output`` (default
        ``<output>/adapted.pt``) and pick everything with it when its self-check passed. A session that
        ends with fewer adapts on those (too few to check keeps the generic head). A restarted watch reuses
        the saved model instead of adapting again.
    adapt_progress : callable, optional
        Receives the adaptation's `hydrapick.training.TrainEvent`s.
    **pick_options
        Passed to `hydrapick.picking.run.pick` (``head``, ``diameter_A``, ``threshold``, ``device`` ...).

    Returns
    -------
    WatchReport

    Raises
    ------
    InputError
        ``spec`` is a single file.
    OutputLockedError
        Another run is writing to ``output``.
    """
    fmt = output_format(output, format)
    if fmt not in WATCH_FORMATS:
        raise ValueError(f"watching writes a job folder; use --format relion or box, not {fmt}")
    if "skip_existing" in pick_options or "shard" in pick_options:
        raise ValueError("watch always continues from the folder's outputs and does not shard")
    check_watchable(spec)
    output = Path(output)
    net_meta = model_and_metadata(model)  # loaded once for the whole session
    adapted_path = Path(adapt_output) if adapt_output is not None else output / "adapted.pt"
    if adapt is not None and adapted_path.exists():
        net_meta = model_and_metadata(str(adapted_path))
        _check_adapted(net_meta[1], adapted_path)
        pick_options = {**pick_options, "head": ADAPTED_HEAD}
        adapt = None
    elif adapt is not None and (head := head_decided_before(output, fmt)) is not None:
        # An earlier session picked here with this head (its adaptation kept the generic head, or it ran
        # without --adapt): adapting again could decide otherwise, and its picks would not join these.
        log.warning("output folder '%s' holds picks made with the '%s' head and no adapted model: not "
                    "adapting again, picking on with that head", output, head)
        pick_options = {**pick_options, "head": head}
        adapt = None
    # The folder is this session's from its start to its end: another run is refused at its start, and
    # none can take the lock between two batches (the batches' own claims are nested in this one).
    folder = PickOutputs(output, fmt, [], None)
    check_writable(folder.path, "output")
    with output_lock(folder.lock_file, f"output '{folder.path}'", shared_within=True):
        session = _Session(spec, output, fmt, net_meta, progress, adapt, adapted_path, pick_options)
        session.adapt_progress = adapt_progress
        return session.run(poll_s, timeout_s, max_polls)


def head_decided_before(output: Path, fmt: str) -> str | None:
    """The head other than the adapted one that an earlier session recorded in ``output``
    (`PickOutputs.record_settings`) when it left picks there, else None."""
    import json

    folder = PickOutputs(output, fmt, [], None)
    if not folder.settings_file.is_file() or not folder.main_files():
        return None
    try:
        head = json.loads(folder.settings_file.read_text(encoding="utf-8")).get("head")
    except (OSError, ValueError, AttributeError):
        return None  # record_settings says what is wrong with it
    return head if isinstance(head, str) and head != ADAPTED_HEAD else None


def _check_adapted(metadata: dict, path: Path) -> None:
    """Refuse an adapted model that no held-out micrograph checked (written before that was required)."""
    if not (metadata.get("adaptation") or {}).get("held_out"):
        raise ValueError(f"'{path}' was adapted without a self-check on held-out micrographs (fewer than 3 "
                         "micrographs); delete it to adapt again on enough micrographs")


class _Session:
    """One watch session's state: what was seen at the last poll, picked (and at which size), failed."""

    def __init__(self, spec, output: Path, fmt: str, net_meta, progress, adapt: AdaptConfig | None,
                 adapted_path: Path, pick_options: dict) -> None:
        self.source = Arrivals(spec)
        self.output, self.fmt, self.net_meta, self.progress = output, fmt, net_meta, progress
        self.adapt, self.adapted_path, self.pick_options = adapt, adapted_path, pick_options
        self.adapt_progress: Callable | None = None
        self.report = WatchReport(done=0, picks=0, picked=0, skipped=0, output=output)
        self.started = time.monotonic()
        self.seen: dict[str, tuple[int, int]] = {}  # size and mtime at the last poll
        self.picked: dict[str, tuple[int, int]] = {}  # size and mtime each was picked at
        self.failed: dict[str, tuple[FileStat, str]] = {}  # the file as it failed, and why
        self.done: list[MicrographInput] = []
        self.picked_now: set[str] = set()
        self.readable: dict[str, FileStat] = {}  # files read once while adaptation waits, as they were then
        self.earlier: set[str] = set()  # micrographs whose outputs an earlier session wrote
        self.looked_at: set[str] = set()  # files whose earlier session's outputs were compared with them

    def run(self, poll_s: float, timeout_s: float | None, max_polls: int | None) -> WatchReport:
        report = self.report
        last_activity = self.started
        polls = 0
        held: _Ready = []  # ready, waiting for enough micrographs to adapt on
        current: dict[str, tuple[MicrographInput, FileStat]] = {}
        while True:
            if abort_requested(self.output):
                report.stopped = "abort"
                break
            current = self.source.poll()
            sizes = {path: stat[:2] for path, (_, stat) in current.items()}
            if sizes != self.seen:
                last_activity = time.monotonic()
            self._forget_changed(current)
            ready = [(item, stat) for path, (item, stat) in current.items()
                     if path not in self.picked and self.seen.get(path) == stat[:2]
                     and (path not in self.failed or self.failed[path][0] != stat)]
            self.seen = sizes
            ready = self._report_empty(self._forget_older_picks(ready))
            held = []
            if ready and self._first_batch():
                # Only micrographs that read count towards those adaptation and the scale calibration
                # wait for (a stalled copy does not); the others are reported and tried again when they
                # change.
                ready = self._readable(ready)
                if len(ready) < self._first_batch():
                    held, ready = ready, []
            if ready:
                if self._batch(ready):
                    report.stopped = "abort"
                    break
                last_activity = time.monotonic()
            polls += 1
            if max_polls is not None and polls >= max_polls:
                report.stopped = "polls"
                break
            if timeout_s is not None and time.monotonic() - last_activity >= timeout_s:
                report.stopped = "timeout"
                break
            time.sleep(poll_s)
        if held and report.stopped != "abort":
            # The session ends with fewer micrographs than adaptation waited for: adapt on those (too
            # few to check keeps the generic head), then pick them.
            self._batch(held)
        # The failures are those left at the end: not a file fixed and picked later, nor one removed.
        report.failures = [(path, reason) for path, (_, reason) in self.failed.items() if path in current]
        report.failures += [(item.path, f"'{item.name}' is listed in '{self.source.text}' but does not exist")
                            for item in self.source.missing]
        report.seconds = time.monotonic() - self.started
        return report

    def _forget_changed(self, current: dict) -> None:
        """Remove the outputs of micrographs whose file changed after they were picked (and has stopped
        changing), so that they are picked again."""
        for path, was in list(self.picked.items()):
            if path not in current:
                continue  # removed: its picks stay
            item, stat = current[path]
            if stat[:2] == was or self.seen.get(path) != stat[:2]:
                continue
            log.warning("%s changed after it was picked (%d -> %d bytes, modified again); picking it again",
                        item.name, was[0], stat[0])
            del self.picked[path]
            self._remove_outputs(item, PickOutputs(self.output, self.fmt, [item], None))

    def _forget_older_picks(self, ready: _Ready) -> _Ready:
        """Remove the outputs an earlier session wrote for a micrograph modified after them (replaced
        while no watcher ran), so that it is picked again; each micrograph is looked at once."""
        for item, stat in ready:
            if item.path in self.looked_at:
                continue
            self.looked_at.add(item.path)
            outputs = PickOutputs(self.output, self.fmt, [item], None)
            try:
                written = outputs.main_file(item).stat().st_mtime_ns
            except OSError:  # not picked before
                continue
            if stat[1] > written:
                log.warning("%s was modified after an earlier session picked it; picking it again", item.name)
                self._remove_outputs(item, outputs)
        return ready

    def _remove_outputs(self, item: MicrographInput, outputs: PickOutputs) -> None:
        try:  # the running totals shown until the next batch's are known
            self.report.picks -= len(outputs.read_back(item))
        except (FormatError, OSError, ValueError):
            pass
        outputs.main_file(item).unlink(missing_ok=True)  # first: the main file marks a finished one
        outputs.candidates_file(item).unlink(missing_ok=True)
        self.done = [it for it in self.done if it.path != item.path]
        self.report.done = len(self.done)
        if item.name not in self.report.repicked:
            self.report.repicked.append(item.name)

    def _report_empty(self, ready: _Ready) -> _Ready:
        """Record the zero-byte files among ``ready`` as failed (tried again when they change)."""
        out = []
        for item, stat in ready:
            if stat[0] > 0:
                out.append((item, stat))
                continue
            error = f"'{item.path}' is empty (0 bytes); it is picked once it is written"
            self.failed[item.path] = (stat, error)
            self._tell(WatchProgress(**self._counts(), name=item.name, error=error))
        return out

    def _readable(self, ready: _Ready) -> _Ready:
        """Those of ``ready`` that read as micrographs (each version of a file read once); the others
        are recorded as failed."""
        out = []
        for item, stat in ready:
            if self.readable.get(item.path) != stat:
                try:
                    read_micrograph(item.path)
                except (FormatError, OSError, ValueError) as exc:
                    error = failure_reason(item.path, exc)
                    self.failed[item.path] = (stat, error)
                    self._tell(WatchProgress(**self._counts(), name=item.name, error=error))
                    continue
                self.readable[item.path] = stat
            out.append((item, stat))
        return out

    def _counts(self) -> dict:
        return dict(done=self.report.done, picks=self.report.picks, failed=len(self.failed),
                    picked=self.report.picked, seconds=time.monotonic() - self.started)

    def _tell(self, event: WatchProgress) -> None:
        if self.progress is not None:
            self.progress(event)

    def _first_batch(self) -> int:
        """Micrographs to wait for before the first pick (0: none): enough to adapt on, and to measure
        the particle scale on (`CALIBRATION_MICROGRAPHS`) unless this folder already holds a measure."""
        need = self.adapt.micrographs if self.adapt is not None else 0
        opts = self.pick_options
        measured = (self.output / CALIBRATION_FILE).is_file() or opts.get("calibration") is not None
        if opts.get("calibrate", True) and not measured:
            need = max(need, CALIBRATION_MICROGRAPHS)
        return need

    def _scale(self, items: list[MicrographInput]) -> float:
        """The diameter to pick at: measured once on the first micrographs and kept in the folder, where
        every later batch and a restarted session find it (`choose_scale`)."""
        net, meta = self.net_meta
        opts = self.pick_options
        head = opts.get("head", PICK_HEAD)
        chosen = choose_scale(items, PickOutputs(self.output, self.fmt, items, None), net, meta, head,
                              optional_diameter(meta, head, opts.get("diameter_A")), opts.get("pixel_size_A"),
                              calibrate=opts.get("calibrate", True), calibration=opts.get("calibration"),
                              continuing=True, device=opts.get("device", "auto"),
                              num_threads=opts.get("num_threads"),
                              mixed_precision=opts.get("mixed_precision", True), progress=None)
        self.report.calibration = chosen
        return chosen.diameter_A

    def _adapt(self, items: list[MicrographInput]) -> None:
        """Adapt once on ``items`` (they are picked with the rest after), at the measured scale; pick with
        the adapted head when its self-check passed."""
        net, meta = self.net_meta
        opts = self.pick_options
        head = opts.get("head", PICK_HEAD)
        net, meta, head, _, self.report.adaptation = adapt_for_run(
            net, meta, head, None, items, self._scale(items),
            opts.get("pixel_size_A"), self.adapt, opts.get("device", "auto"), opts.get("num_threads"),
            self.adapted_path, self.adapt_progress, user_threshold=True)
        self.net_meta = (net, meta)
        self.pick_options = {**opts, "head": head}
        self.adapt = None

    def _batch(self, ready: _Ready) -> bool:
        """Pick ``ready`` into the folder beside what is done; True when stopped by the abort file."""
        new = [item for item, _ in ready]
        stats = {item.path: stat for item, stat in ready}
        if self.adapt is not None:
            self._adapt(new)
        items = self.done + new
        outputs = PickOutputs(self.output, self.fmt, new, None)
        earlier = {it.path for it in new if outputs.exists(it)}  # picked by an earlier session
        report = self.report
        base_done, base_picks = report.done, report.picks
        again = set(report.repicked)

        def each(event: PickProgress) -> None:
            if event.result is not None:
                result = event.result
                if result.ok:
                    self.failed.pop(result.path, None)
                    self.picked_now.add(result.path)
                    report.picked = len(self.picked_now)
                else:
                    self.failed[result.path] = (stats[result.path], result.error or "unknown error")
                self._tell(WatchProgress(
                    done=base_done + event.done - event.failed, picks=base_picks + event.picks,
                    failed=len(self.failed), picked=report.picked, seconds=time.monotonic() - self.started,
                    name=result.name, n_picks=len(result.selected) if result.ok else None,
                    error=result.error, again=result.ok and result.name in again))
            if abort_requested(self.output):
                raise _Stop

        try:
            run = pick(items, self.output, format=self.fmt, model=self.net_meta, skip_existing=True,
                       progress=each, **self.pick_options)
        except _Stop:
            # Index what was finished (each picked micrograph's files are on disk already), then stop.
            outputs = PickOutputs(self.output, self.fmt, items, None)
            self.done = [it for it in items if outputs.exists(it)]
            if self.done:
                run = pick(self.done, self.output, format=self.fmt, model=self.net_meta, skip_existing=True,
                           **self.pick_options)
                report.done, report.picks = run.n_micrographs, len(run.picks)
            return True
        self.report.calibration = run.calibration
        bad = {path for path, _ in run.failures}
        for item in new:
            if item.path not in bad:
                self.picked[item.path] = stats[item.path][:2]
        self.done = [it for it in items if it.path not in bad]
        self.earlier |= earlier - bad
        # Those an earlier session picked and this one did not pick again.
        report.skipped = len(self.earlier - self.picked_now)
        report.done, report.picks = len(self.done), len(run.picks)
        self._tell(WatchProgress(**self._counts()))
        return False
