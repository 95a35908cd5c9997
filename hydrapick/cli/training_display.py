"""What ``hydrapick train`` and ``hydrapick finetune`` share: their progress display and the command line
they record in checkpoints."""

from __future__ import annotations

import click


def invocation() -> str:
    """The current command with its effective options, for the provenance stored in checkpoints."""
    import shlex

    ctx = click.get_current_context()
    parts = ["hydrapick", ctx.info_name or ""]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if value is None or value is False or value == ():
            continue
        values = value if isinstance(value, tuple) else (value,)
        if isinstance(param, click.Argument):
            parts += [shlex.quote(str(v)) for v in values]
            continue
        flag = max(param.opts, key=len)
        if getattr(param, "is_flag", False):
            parts.append(flag)
        else:
            for v in values:
                parts += [flag, shlex.quote(str(v))]
    return " ".join(parts)


class TrainDisplay:
    """Rich progress for `hydrapick train` / `finetune`, fed by the library's TrainEvent callback."""

    def __init__(self, console) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = console
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
                                 TextColumn("eta"), TimeRemainingColumn(), console=console,
                                 disable=console.quiet)
        self.tasks: dict[str, int] = {}
        self.phase_steps: dict[str, int] = {}  # steps done per fine-tuning phase, for the overall bar

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def _task(self, key: str, description: str, total: int) -> int:
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(description, total=total, info="")
        return self.tasks[key]

    def __call__(self, event) -> None:
        p = self.progress
        if event.kind in ("load", "features"):
            label = "caching micrographs" if event.kind == "load" else "computing features"
            task = self._task(event.kind, label, event.steps)
            p.update(task, completed=event.step, total=event.steps, info=event.message)
        elif event.kind == "phase":
            task = self._task("epochs", event.phase, event.epochs)
            p.update(task, description=event.phase, completed=event.epoch, total=event.epochs, info="")
        elif event.kind == "plan":
            # Fine-tuning trains several heads one after the other (cross-validation folds, then the
            # final one): one bar over all of them gives the time left for the whole command.
            self._task("plan", "fine-tuning, all heads", event.steps)
        elif event.kind == "step":
            label = "steps" if event.epochs else event.phase
            task = self._task("steps", label, event.steps)
            p.update(task, description=label, completed=event.step, total=event.steps,
                     info=f"loss {event.values.get('loss', float('nan')):.4f}")
            if "plan" in self.tasks:
                done = self.phase_steps.get(event.phase, 0)
                p.advance(self.tasks["plan"], max(0, event.step - done))
                self.phase_steps[event.phase] = event.step
        elif event.kind == "epoch":
            record = event.values
            p.update(self._task("epochs", event.phase, event.epochs), completed=event.epoch)
            p.console.print(epoch_line(record))
        elif event.kind in ("calibrate", "done") and event.message:
            p.console.print(event.message)


def epoch_line(record: dict) -> str:
    valid = record.get("valid") or {}
    parts = [f"{record['phase']:<9} {record['epoch']:>4}/{record['epochs']}",
             f"loss {record['train']['loss']:.4f}"]
    if valid.get("loss") is not None:
        parts.append(f"valid {valid['loss']:.4f}")
    aps = [f"{h} {v['ap']:.3f}" for h, v in valid.get("heads", {}).items()
           if isinstance(v, dict) and v.get("ap") is not None]
    if aps:
        parts.append("AP " + ", ".join(aps[:6]) + (" ..." if len(aps) > 6 else ""))
    if record.get("best"):
        parts.append("[bold green]best[/]")
    return "  ".join(parts)
