"""Running as a RELION 4/5 External job: the command line RELION builds, and the end-of-job protocol.

RELION's External job (``RelionJob::getCommandsExternalJob`` in RELION's ``src/pipeline_jobs.cpp``) runs

    EXE --o External/jobNNN/ [--in_movies F] [--in_mics F] [--in_parts F] [--in_coords F] [--in_3dref F]
        [--in_mask F] [--LABEL1 VALUE1 ... --LABEL10 VALUE10] --j THREADS [other arguments]
        >> External/jobNNN/run.out 2>> External/jobNNN/run.err &

from the project folder (``RelionJob::prepareFinalCommand``; a parameter with an empty value arrives as a
bare ``--LABEL``, and an executable whose path contains ``relion_`` also gets ``--pipeline_control
External/jobNNN/``). `parse_job_args` reads that line; `run_job` wraps the work in the protocol of
`hydrapick.io.relion_pipeline`: earlier exit files removed, the job's output nodes written, then
``RELION_JOB_EXIT_SUCCESS``, or ``RELION_JOB_EXIT_FAILURE`` with the reason in ``run.err``, or
``RELION_JOB_EXIT_ABORTED`` when the work stopped on ``RELION_JOB_ABORT_NOW``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..io import relion_pipeline as control
from ..io.atomic import check_writable
from ..io.signals import Terminated, stop_on_signals

# The inputs RELION passes by name (External job "Input" tab), and what the executable itself receives.
INPUT_OPTIONS = ("in_movies", "in_mics", "in_parts", "in_coords", "in_3dref", "in_mask")
_FIXED = ("o", "j", "pipeline_control", *INPUT_OPTIONS)
_TRUE = ("", "1", "yes", "true", "on", "y")
_FALSE = ("0", "no", "false", "off", "n")

EXIT_CODES = {control.EXIT_SUCCESS: 0, control.EXIT_FAILURE: 1, control.EXIT_ABORTED: 2}


class JobError(Exception):
    """A problem with the job's inputs or parameters (one line for ``run.err``)."""


class JobAborted(Exception):
    """The job stopped because ``RELION_JOB_ABORT_NOW`` appeared in its folder."""


@dataclass
class JobArgs:
    """An External job's command line: output folder, inputs, ``--LABEL VALUE`` parameters, threads."""

    job_dir: Path
    output_name: str
    inputs: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    threads: int | None = None

    def node_name(self, filename: str) -> str:
        """A file of the job named as RELION names nodes: the ``--o`` value as given, then the file."""
        return self.output_name.rstrip("/") + "/" + filename

    @property
    def project_dir(self) -> Path:
        """RELION runs jobs from the project folder: two levels above ``.../jobNNN``, else here."""
        job = Path(os.path.abspath(self.job_dir))
        return job.parent.parent if job.name.startswith("job") else Path.cwd()

    def take(self, name: str, convert: Callable[[str], object] = str, default=None):
        """Remove parameter ``name`` and return it converted (``default`` when absent)."""
        if name not in self.params:
            return default
        text = self.params.pop(name)
        try:
            return convert(text)
        except ValueError:
            raise JobError(f"parameter --{name}: cannot read {text!r} "
                           f"({getattr(convert, '__name__', 'value')} expected)") from None

    def check_used(self, known: Sequence[str]) -> None:
        """Raise `JobError` naming any parameter left unused (a typo in a label would be silent)."""
        if self.params:
            raise JobError(f"unknown parameter(s) {', '.join('--' + p for p in self.params)}; this job "
                           f"takes {', '.join('--' + k for k in known)}")


def flag(text: str) -> bool:
    """A yes/no parameter value (an empty value, a bare ``--LABEL``, means yes)."""
    value = text.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ValueError(text)


def parse_job_args(argv: Sequence[str]) -> JobArgs:
    """Read the command line RELION builds for an External job (see the module docstring).

    Labels are compared in lower case with ``-`` read as ``_``; a label without a value gets ``""``.

    Raises
    ------
    JobError
        No ``--o``, a repeated label, or text that is not a ``--LABEL``.
    """
    values: dict[str, str] = {}
    tokens = list(argv)
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("--") or len(token) == 2:
            raise JobError(f"unexpected argument {token!r}: RELION passes --LABEL VALUE pairs")
        label = token[2:].lower().replace("-", "_")
        value = ""
        if i + 1 < len(tokens) and not tokens[i + 1].startswith("--"):
            value = tokens[i + 1]
            i += 1
        if label in values:
            raise JobError(f"parameter --{label} given twice")
        values[label] = value
        i += 1
    output = values.pop("o", "") or values.get("pipeline_control", "")
    values.pop("pipeline_control", None)
    if not output:
        raise JobError("no output folder: RELION passes --o External/jobNNN/")
    threads = values.pop("j", "")
    try:
        n_threads = int(threads) if threads else None
    except ValueError:
        raise JobError(f"--j {threads!r} is not a number of threads") from None
    inputs = {k: values.pop(k) for k in INPUT_OPTIONS if values.get(k)}
    for k in INPUT_OPTIONS:
        values.pop(k, None)
    return JobArgs(job_dir=Path(output), output_name=output, inputs=inputs, params=values,
                   threads=n_threads if n_threads and n_threads > 0 else None)


def check_abort(job_dir: Path) -> None:
    """Raise `JobAborted` when RELION asked the job to stop."""
    if control.abort_requested(job_dir):
        raise JobAborted


def run_job(argv: Sequence[str] | None, work: Callable[[JobArgs], list[tuple[str, str]]],
            what: str) -> int:
    """Run ``work`` as an External job; returns the exit status (0 success, 1 failure, 2 aborted,
    128 + N when signal N, SIGTERM or SIGHUP, stopped it: ``RELION_JOB_EXIT_ABORTED`` is written then).

    ``work`` returns the job's output nodes ``[(name, type label)]``, written to
    ``RELION_OUTPUT_NODES.star`` before ``RELION_JOB_EXIT_SUCCESS``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = parse_job_args(argv)
    except JobError as exc:
        # RELION waits for an exit file: write one where the command line names the job's folder.
        output = next((argv[i + 1] for i in range(len(argv) - 1) if argv[i] == "--o"), None)
        if output is None or not _start(Path(output), what):
            print(f"{what}: {exc}", file=sys.stderr)
            return EXIT_CODES[control.EXIT_FAILURE]
        _report_error(Path(output), f"{what}: ERROR: {exc}", None)
        control.write_exit(Path(output), control.EXIT_FAILURE)
        return EXIT_CODES[control.EXIT_FAILURE]
    job = args.job_dir
    if not _start(job, what):
        return EXIT_CODES[control.EXIT_FAILURE]
    print(f"{what}: {' '.join(argv)}", flush=True)
    code = None
    try:
        with stop_on_signals():
            nodes = work(args)
            control.write_output_nodes(job, nodes)
        status = control.EXIT_SUCCESS
    except JobAborted:
        print(f"{what}: aborted ({control.ABORT_NOW} found); run the job again with Continue to finish it",
              flush=True)
        status = control.EXIT_ABORTED
    except (Terminated, KeyboardInterrupt) as exc:
        # A time limit, scancel, a closed terminal or Ctrl-C: the lock is released on the way here, and
        # RELION is told the job stopped, so that Continue picks the rest.
        stop = exc.name if isinstance(exc, Terminated) else "an interrupt"
        code = exc.exit_status if isinstance(exc, Terminated) else 130
        _report_error(job, f"{what}: stopped by {stop}; finished micrographs are kept, Continue the job "
                           "to finish it", None)
        status = control.EXIT_ABORTED
    except Exception as exc:  # noqa: BLE001 - every failure must end in RELION_JOB_EXIT_FAILURE
        reason = " ".join(str(exc).split()) or type(exc).__name__
        # hydrapick's own errors (bad input) are ValueErrors with a complete message; others get a traceback.
        known = isinstance(exc, (JobError, ValueError, OSError))
        _report_error(job, f"{what}: ERROR: {reason}", None if known else traceback.format_exc())
        status = control.EXIT_FAILURE
    control.write_exit(job, status)
    print(f"{what}: {status}", flush=True)
    return EXIT_CODES[status] if code is None else code


def _start(job: Path, what: str) -> bool:
    """Create the job's folder and remove earlier exit files; False, with one line on stderr, when the
    folder cannot be written (no exit file can tell RELION then)."""
    try:
        job.mkdir(parents=True, exist_ok=True)
        control.clear_exit_files(job)
        check_writable(job, "job folder", folder=True)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        print(f"{what}: ERROR: cannot write the job folder '{job}': {reason}", file=sys.stderr, flush=True)
        return False
    return True


def console_main(argv: Sequence[str] | None, work: Callable[[JobArgs], list[tuple[str, str]]],
                 what: str) -> int:
    """A console script's body: `run_job`, then exit with its status (return it when given ``argv``)."""
    status = run_job(argv, work, what)
    if argv is None:
        sys.exit(status)
    return status


def _report_error(job: Path, line: str, details: str | None) -> None:
    """The reason on stderr, and in ``run.err`` unless stderr already goes there (RELION redirects it)."""
    text = line + "\n" + (details or "")
    print(text, file=sys.stderr, end="", flush=True)
    err = job / "run.err"
    try:
        same = err.exists() and os.path.samestat(os.fstat(sys.stderr.fileno()), err.stat())
    except (OSError, ValueError, AttributeError):  # stderr replaced by something without a file
        same = False
    if not same:
        with open(err, "a", encoding="utf-8") as f:
            f.write(text)
