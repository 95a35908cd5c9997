"""What ``hydrapick pick`` shows: progress bars for adaptation and picking, and the summaries."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def pick_progress(console, quiet: bool):
    """Context manager yielding a progress callback for `hydrapick.picking.run.pick` (a rich bar)."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("picking"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]:.2f} micrographs/s"),
                   TextColumn("{task.fields[picks]} picks"), TextColumn("{task.fields[failed]}"),
                   TimeRemainingColumn(), console=console)
    state: dict = {}

    def update(event) -> None:
        if event.result is None:
            state["task"] = bar.add_task("pick", total=event.total, rate=0.0, picks=0, failed="")
            return
        task = bar.tasks[0]
        elapsed = task.elapsed or 0.0
        failed = f"[red]{event.failed} failed[/red]" if event.failed else ""
        bar.update(state["task"], completed=event.done, picks=event.picks, failed=failed,
                   rate=event.done / elapsed if elapsed > 0 else 0.0)

    with bar:
        yield update


@contextlib.contextmanager
def calibrate_progress(console, quiet: bool):
    """Context manager yielding a progress callback for the scale calibration (a rich bar)."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("measuring the particle scale"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=console, transient=True)
    state: dict = {}

    def update(done: int, total: int) -> None:
        if "task" not in state:
            state["task"] = bar.add_task("calibrate", total=total)
        bar.update(state["task"], completed=done, total=total)

    with bar:
        yield update


@contextlib.contextmanager
def adapt_progress(console, quiet: bool):
    """Context manager yielding a progress callback for the adaptation phase (a rich bar per stage)."""
    if quiet:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("adapting: {task.description}"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[note]}"), TimeElapsedColumn(), console=console)
    tasks: dict = {}

    def update(event) -> None:
        if event.kind == "phase":
            bar.console.print(f"adapting: {event.phase} ({event.message})")
            return
        if event.kind not in ("features", "step"):
            return
        key = "body features" if event.kind == "features" else f"training head ({event.phase})"
        if key not in tasks:
            tasks[key] = bar.add_task(key, total=event.steps, note="")
        loss = (event.values or {}).get("loss")
        bar.update(tasks[key], completed=event.step, note=f"loss {loss:.3f}" if loss is not None else "")

    with bar:
        yield update


def adapt_summary(report: dict, console) -> None:
    check = report.get("self_check")
    if check is None:  # adaptation did not run (too few micrographs to check it)
        base = report.get("base_head") or "generic"
        console.print(f"adaptation: [yellow]{base} head kept[/yellow]: {report['reason']}")
        return
    seeds = ", ".join(str(s["particles"]) for s in report.get("seeds", []))
    console.print(f"adaptation: learnt from {len(report['micrographs'])} micrographs "
                  f"({len(report.get('held_out', []))} held out for the self-check), {report['rounds']} "
                  f"rounds, seed particles per round {seeds}; about "
                  f"{report['estimated_particles_per_micrograph']:.0f} particles per micrograph.")
    verdict = "[green]adapted head used[/green]" if report["kept"] else "[yellow]generic head kept[/yellow]"
    console.print(f"adaptation: {verdict}: {report['reason']} (seed recovery "
                  f"{check.get('seed_recovery', float('nan')):.2f}, count ratio "
                  f"{check.get('count_ratio', float('nan')):.2f})")
    if report.get("saved"):
        console.print(f"adaptation: model saved to {report['saved']} (pick with --model "
                      f"{report['saved']} --head adapted)")


def pick_summary(report, console) -> None:
    from rich.table import Table

    table = Table(title="hydrapick pick", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column(justify="right")
    picked = report.n_picked
    n_picks = len(report.picks)
    if report.calibration is not None:
        table.add_row("particle diameter", report.calibration.summary().removeprefix("diameter "))
    table.add_row("micrographs", f"{report.n_micrographs}")
    table.add_row("picked", f"{picked}")
    if report.n_skipped:
        table.add_row("skipped (outputs exist)", f"{report.n_skipped}")
    table.add_row("failed", f"[red]{report.n_failed}[/red]" if report.n_failed else "0")
    table.add_row(f"picks (score >= {report.threshold:.3g})", f"{n_picks}")
    done = picked + report.n_skipped
    table.add_row("mean picks per micrograph", f"{n_picks / done:.1f}" if done else "-")
    table.add_row("candidates (all scores)", f"{len(report.candidates)}")
    table.add_row("time", f"{report.seconds:.1f} s ({report.micrographs_per_second:.2f} micrographs/s)")
    for path in report.outputs:
        table.add_row("output", str(path))
    console.print(table)
