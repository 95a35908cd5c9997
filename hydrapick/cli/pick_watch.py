"""``hydrapick pick --watch``: the live display of on-the-fly picking (`hydrapick.picking.watch` works)."""

from __future__ import annotations

import click


def run_watch(micrographs: tuple[str, ...], output: str, fmt: str | None, model_path: str | None,
              timeout_s: float, poll_s: float, shard: str | None, console, options: dict) -> int:
    """Watch one folder or glob, printing one summary line per micrograph; returns the number failed."""
    from pathlib import Path

    from ..checkpoint import CheckpointError
    from ..io import FormatError
    from ..io.inputs import InputError
    from ..picking.arrivals import check_watchable
    from ..picking.calibrate import CALIBRATION_FILE, CALIBRATION_MICROGRAPHS
    from ..picking.watch import watch

    if len(micrographs) != 1:
        raise click.UsageError("--watch takes one folder or quoted glob ('Movies/*.mrc')")
    if shard:
        raise click.UsageError("--watch does not shard; run one watcher per folder")
    try:
        check_watchable(micrographs[0])
    except InputError as exc:
        raise click.UsageError(str(exc)) from None

    def line(event) -> None:
        if event.name is None and event.error is None:
            return
        what = (f"[red]failed[/red] {event.error}" if event.error is not None
                else f"{event.name}: {event.n_picks} picks" + (" (again: it changed)" if event.again else ""))
        console.print(f"{what} | {event.done} done, {event.picks_per_micrograph:.1f} picks/micrograph, "
                      f"{event.micrographs_per_minute:.1f} micrographs/min"
                      + (f", {event.failed} failed" if event.failed else ""), highlight=False)

    def adapting(event) -> None:  # a line per stage: a bar would stay on screen for the whole session
        if event.kind == "phase":
            console.print(f"adapting: {event.phase} ({event.message})", highlight=False)
        elif event.kind == "features" and event.step == 1:
            console.print(f"adapting: learning from {event.steps} micrographs", highlight=False)

    console.print(f"watching {micrographs[0]} every {poll_s:g} s (stop after {timeout_s:g} s without a new "
                  f"micrograph, or when {output}/RELION_JOB_ABORT_NOW appears)", highlight=False)
    adapted = Path(options.get("adapt_output") or Path(output) / "adapted.pt")
    if options.get("adapt") is not None and adapted.exists():
        console.print(f"--adapt: picking with the head adapted earlier ({adapted})", highlight=False)
    elif options.get("adapt") is not None and _head_decided_before(output, fmt):
        pass  # watch() says that it picks on with the head of the folder's earlier picks
    elif options.get("adapt") is not None:
        console.print(f"--adapt: nothing is picked until {options['adapt'].micrographs} micrographs have "
                      "arrived to learn from (or the session ends)", highlight=False)
    if options.get("calibrate", True) and options.get("calibration") is None \
            and not (Path(output) / CALIBRATION_FILE).is_file():
        console.print(f"the particle scale is measured on the first {CALIBRATION_MICROGRAPHS} micrographs "
                      f"and kept in {Path(output) / CALIBRATION_FILE}: nothing is picked before they arrive",
                      highlight=False)
    try:
        report = watch(micrographs[0], output, format=fmt, model=model_path, poll_s=poll_s,
                       timeout_s=timeout_s, progress=line, adapt_progress=adapting, **options)
    except (InputError, FormatError, CheckpointError, ValueError, OSError) as exc:
        raise click.ClickException(" ".join(str(exc).split())) from exc
    if report.calibration is not None:
        console.print(f"particle {report.calibration.summary()}", highlight=False)
    if report.adaptation is not None:
        from .pick_display import adapt_summary

        adapt_summary(report.adaptation, console)
    reason = {"timeout": f"nothing new for {timeout_s:g} s", "abort": "abort file found"}.get(report.stopped,
                                                                                            report.stopped)
    again = f", {len(report.repicked)} of them again after they changed" if report.repicked else ""
    console.print(f"stopped ({reason}): {report.done} micrographs in {output} ({report.picked} picked "
                  f"now{again}, {report.skipped} from an earlier run), {report.picks} picks, "
                  f"{len(report.failures)} failed", highlight=False)
    for _, reason in report.failures:
        click.echo(f"failed: {reason}", err=True)
    return len(report.failures)


def _head_decided_before(output: str, fmt: str | None) -> str | None:
    """`hydrapick.picking.watch.head_decided_before`, None where the format is refused (watch says why)."""
    from pathlib import Path

    from ..picking.outputs import output_format
    from ..picking.watch import head_decided_before

    try:
        return head_decided_before(Path(output), output_format(output, fmt))
    except ValueError:
        return None
