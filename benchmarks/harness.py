"""The benchmark harness: datasets, pickers, one scorer and one results format for every entry point.

Python API (put ``benchmarks/`` on ``sys.path``, as the entry points beside this file have it)::

    from harness import real_sets, simulated_targets, run_hydrapick, run_relion_log, run_topaz, score

    sets = real_sets(["empiar-10146"], split="test", micrographs=2) + simulated_targets(n=2)
    for ds in sets:
        result = run_hydrapick(ds, Path("runs/x") / ds.name, diameter_factor=0.8, extra=["--tta"])
        report = score(result, ds)          # hydrapick.evaluation.EvaluationReport (.ap, .best_f1, ...)
        print(ds.name, report.ap, result.default_report.precision, result.seconds_per_micrograph)

- Datasets (`Dataset`): every real set in ``../shared/data/real`` (pixel size, labelled diameter and split
  from its ``meta.json``) and the simulated held-out targets (structures 4hhb, 6b7n, 6msm of
  ``recipes/generic/targets.txt``, never in the generic model's training corpus), simulated once with
  ``hydrapick simulate`` into ``cache/benchmarks/simulated``.
- Pickers, each run as the command a user runs, timed (wall, CPU, peak memory), outputs kept under the
  folder given: `run_hydrapick` (``python -m hydrapick pick`` with any options), `run_relion_log`
  (RELION 3.1 ``relion_autopick --LoG``), `run_topaz` (pretrained Topaz from ``.venv-topaz``, built by
  ``topaz_setup.sh``). A picker that is missing or fails gives a `Result` whose ``error`` says why.
- One scorer (`score`): `hydrapick.evaluation.evaluate`, box = the labelled diameter, IoU > 0.6, and one
  edge rule for truth and picks alike (centres at least half the labelled diameter inside the micrograph,
  `hydrapick pick`'s own rule), on every candidate (AP, best F1) and on the picker's default output
  (precision and recall at its default threshold).
- One results format (`write_results`): a printed table and one JSON file per benchmark in
  ``benchmarks/results/`` (a run on a subset writes under ``cache/benchmarks/`` instead).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np

import hydrapick.io as io
from hydrapick.evaluation import EvaluationReport, drop_near_edge, evaluate, load_coordinates
from hydrapick.picks import Picks, micrograph_key

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
STRUCTURES = ROOT.parent / "shared" / "data" / "structures"
HELD_OUT = ("4hhb", "6b7n", "6msm")  # recipes/generic/targets.txt
CACHE = ROOT / "cache" / "benchmarks"
RESULTS = ROOT / "benchmarks" / "results"
TOPAZ_VENV = ROOT / ".venv-topaz"
# The hydrapick of this interpreter (the one whose evaluation scores the runs), not the first on PATH.
HYDRAPICK = [sys.executable, "-m", "hydrapick"]
# Topaz's quick start extracts its example particle with `-r 14 -x 8`: about 28 px across after
# downsampling. The -s a user derives from the diameter is the integer closest to diameter_px / 28.
TOPAZ_PARTICLE_PX = 28.0
TOPAZ_SCALES = (1, 2, 3, 4)


# --- datasets ----------------------------------------------------------------------------------------------

@dataclass
class Dataset:
    """Micrographs with their true particle centres; one labelled diameter and pixel size for all."""

    name: str
    micrographs: list[Path]
    truth_dir: Path  # one coordinate file per micrograph (may hold more micrographs than these)
    diameter_A: float
    pixel_size_A: float

    @property
    def diameter_px(self) -> float:
        return self.diameter_A / self.pixel_size_A

    @property
    def keys(self) -> list[str]:
        return [micrograph_key(p.name) for p in self.micrographs]

    @functools.cached_property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, columns) of each micrograph, from its MRC header."""
        shapes = {}
        for path in self.micrographs:
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                shapes[micrograph_key(path.name)] = (int(mrc.header.ny), int(mrc.header.nx))
        return shapes

    @functools.cached_property
    def truth(self) -> Picks:
        return self.in_region(load_coordinates(self.truth_dir).picks)

    def in_region(self, picks: Picks) -> Picks:
        """The picks on these micrographs whose centre is at least half the labelled diameter inside."""
        picks = picks[np.isin(micrograph_keys_of(picks), self.keys)]
        return drop_near_edge(picks, self.shapes, self.diameter_px / 2)

    def describe(self) -> str:
        return (f"{self.name}: {len(self.micrographs)} micrographs, {len(self.truth)} particles scored, "
                f"{self.diameter_A:g} A at {self.pixel_size_A:g} A/px ({self.diameter_px:.1f} px)")


def micrograph_keys_of(picks: Picks) -> list[str]:
    return [micrograph_key(m) for m in picks.micrograph]


def real_sets(names: list[str] | None = None, *, split: str = "all", micrographs: int | None = None,
              root: Path = REAL) -> list[Dataset]:
    """Every real set in ``root`` (or those named), from its ``meta.json``.

    ``split`` is ``all`` or comma-separated split names of meta.json (``test``, ``train,valid``);
    ``micrographs`` keeps the first N of them (in the split's order).
    """
    found = sorted(p.parent.name for p in root.glob("*/meta.json"))
    unknown = sorted(set(names or []) - set(found))
    if unknown:
        raise SystemExit(f"no real set {unknown[0]!r} in {root}; found: {', '.join(found)}")
    sets = []
    for name in names or found:
        meta = json.loads((root / name / "meta.json").read_text())
        parts = list(meta["split"]) if split == "all" else [s.strip() for s in split.split(",")]
        stems = [s for part in parts for s in meta["split"][part]][:micrographs]
        sets.append(Dataset(name, [root / name / "micrographs" / f"{s}.mrc" for s in stems],
                            root / name / "truth", float(meta["diameter_A"]), float(meta["pixel_size_A"])))
    return sets


def simulated_targets(structures: tuple[str, ...] = HELD_OUT, *, n: int = 4, seed: int = 5000,
                      diameter_px: float = 40.0, size: int = 1024, cache: Path = CACHE / "simulated",
                      extra: list[str] = ()) -> list[Dataset]:
    """One dataset per held-out structure, made with ``hydrapick simulate`` (reused when in ``cache``).

    Every particle is ``diameter_px`` across on every micrograph of a structure, so one box fits all.
    """
    sets = []
    for i, stem in enumerate(structures):
        out = cache / f"{stem}_n{n}_seed{seed + i}_{diameter_px:g}px_{size}"
        if not (out / "manifest.toml").exists():
            path = next(iter(sorted(STRUCTURES.glob(f"{stem}.*"))), None)
            if path is None:
                raise SystemExit(f"structure {stem} not found in {STRUCTURES}")
            run_checked([*HYDRAPICK, "simulate", "-q", "-n", str(n), "-o", str(out), "--structure", str(path),
                         "--seed", str(seed + i), "--size", str(size), "--diameter-px", f"{diameter_px:g}",
                         *extra], f"hydrapick simulate of {path.name}")
        sets.append(simulation(out, f"sim-{stem}"))
    return sets


def simulation(folder: Path, name: str) -> Dataset:
    """A folder written by ``hydrapick simulate`` as a dataset (one pixel size and diameter required)."""
    entries = tomllib.loads((folder / "manifest.toml").read_text())["micrograph"]
    if len({round(float(e["pixel_size_A"]), 6) for e in entries}) > 1 or \
            len({round(float(e["diameter_A"]), 4) for e in entries}) > 1:
        raise SystemExit(f"{folder}: micrographs differ in pixel size or diameter; one box must fit all")
    return Dataset(name, [folder / e["micrograph"] for e in entries], folder / "coordinates",
                   float(entries[0]["diameter_A"]), float(entries[0]["pixel_size_A"]))


# --- running and timing commands ---------------------------------------------------------------------------

@dataclass
class Result:
    """One picker's run on one dataset: its commands, output files, timing and (once scored) reports."""

    picker: str
    dataset: str
    n_micrographs: int
    settings: dict = field(default_factory=dict)  # what distinguishes this run (typed diameter, -s, ...)
    commands: list[list[str]] = field(default_factory=list)
    candidates: Path | None = None  # every candidate the picker scored (AP, best F1)
    default_output: Path | None = None  # the picks at its default threshold (precision, recall)
    default_threshold: float | None = None  # or: that threshold, applied to the candidates
    seconds: float = math.nan  # wall time of the picker's commands
    cpu_seconds: float = math.nan  # user + system time of those commands (steadier on a shared machine)
    peak_MB: float = math.nan  # the largest resident set of any of its processes
    error: str = ""
    report: EvaluationReport | None = None
    default_report: EvaluationReport | None = None

    @property
    def seconds_per_micrograph(self) -> float:
        return self.seconds / max(1, self.n_micrographs)

    def row(self) -> dict:
        """The plain values of the results file."""
        r, d = self.report, self.default_report
        value = (lambda x: None if x is None or not math.isfinite(x) else round(float(x), 4))  # noqa: E731
        return {"set": self.dataset, "picker": self.picker, **self.settings,
                "micrographs": self.n_micrographs,
                "ap": value(r.ap) if r else None, "best_f1": value(r.best_f1) if r else None,
                "precision": value(d.precision) if d else None, "recall": value(d.recall) if d else None,
                "n_truth": r.n_truth if r else None, "s_per_mic": value(self.seconds_per_micrograph),
                "cpu_s_per_mic": value(self.cpu_seconds / max(1, self.n_micrographs)),
                "peak_MB": value(self.peak_MB), "error": self.error or None,
                "commands": [shorten(c) for c in self.commands]}


def shorten(command: list[str]) -> str:
    """A command line with runs of micrograph paths written as ``<N micrographs>`` (results stay small)."""
    out, run = [], 0
    for word in [*command, ""]:
        if word.endswith(".mrc"):
            run += 1
            continue
        if run:
            out.append(f"<{run} micrographs>")
            run = 0
        if word:
            out.append(shlex.quote(word))
    return " ".join(out)


def timed(steps: list[tuple[list[str], str]], result: Result, cwd: Path | None = None) -> bool:
    """Run commands one after the other into ``result`` (wall and CPU seconds, peak MB); False on failure."""
    result.seconds = result.cpu_seconds = result.peak_MB = 0.0
    for command, what in steps:
        result.commands.append(command)
        start = time.perf_counter()
        with open(os.devnull, "wb") as null, subprocess.Popen(command, cwd=cwd, stdout=null,
                                                              stderr=subprocess.PIPE) as proc:
            stderr = proc.stderr.read().decode(errors="replace")
            _, status, usage = os.wait4(proc.pid, 0)  # this child's own accounting, not every child's
            proc.returncode = os.waitstatus_to_exitcode(status)
        result.seconds += time.perf_counter() - start
        result.cpu_seconds += usage.ru_utime + usage.ru_stime
        result.peak_MB = max(result.peak_MB, usage.ru_maxrss / 1024)
        if proc.returncode != 0:
            tail = " | ".join(stderr.strip().splitlines()[-3:])
            result.error = f"{what} failed (exit {proc.returncode}): {tail}"
            return False
    return True


def run_checked(command: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {tail}")


# --- pickers -----------------------------------------------------------------------------------------------

def run_hydrapick(ds: Dataset, out_dir: Path, *, name: str = "hydrapick", diameter_factor: float | None = 1.0,
                  adapt: bool = False, tta: bool = False, scales: str | None = None, model: str | None = None,
                  head: str | None = None, extra: list[str] = (), device: str = "cpu",
                  threads: int | None = None) -> Result:
    """``hydrapick pick`` at ``diameter_factor`` x the labelled diameter (None: no ``--diameter``).

    ``extra`` is appended to the command as given (any option of ``hydrapick pick``). The main output is
    the picks at the default (calibrated) threshold; AP comes from its candidates file (score floor 0.05).
    """
    result = Result(name, ds.name, len(ds.micrographs), {"typed": diameter_factor})
    out_dir.mkdir(parents=True, exist_ok=True)
    output = out_dir / f"{name}.star"
    command = [*HYDRAPICK, "pick", *map(str, ds.micrographs), "--apix", f"{ds.pixel_size_A:g}", "--format",
               "star", "-o", str(output), "--device", device, "--quiet"]
    if diameter_factor is not None:
        command += ["--diameter", f"{ds.diameter_A * diameter_factor:.6g}"]
    command += ["--adapt", "--adapt-output", str(out_dir / f"{name}_adapted.pt")] if adapt else []
    command += ["--tta"] if tta else []
    command += ["--scales", scales] if scales else []
    command += ["--model", model] if model else []
    command += ["--head", head] if head else []
    command += ["--threads", str(threads)] if threads else []
    if timed([([*command, *extra], "hydrapick pick")], result):
        result.candidates = output.with_name(f"{output.stem}_candidates{output.suffix}")
        result.default_output = output
    return result


def run_relion_log(ds: Dataset, out_dir: Path, *, diameter_factor: float = 1.0,
                   diameter_range: tuple[float, float] = (0.8, 1.2), lowpass_A: float = 20.0,
                   adjust_threshold: float = -1.0, upper_threshold: float = 99999.0, invert: bool = False,
                   extra: list[str] = (), name: str = "relion-log", default_run: bool = True) -> Result:
    """RELION 3.1's Laplacian-of-Gaussian picker, ``--LoG_diam_min/max`` = ``diameter_range`` x the typed
    diameter, one command for all micrographs.

    A low ``adjust_threshold`` keeps nearly every candidate, so AP sees the whole ranking by
    ``_rlnAutopickFigureOfMerit``; with ``default_run`` a second, untimed run at RELION's default
    threshold (0) gives the picks a user gets. The micrographs are linked into a work folder and listed
    by bare name in a RELION 3.1 micrographs STAR (optics block with the pixel size), so RELION's output
    names are predictable; its coordinates are in pixels as read, y down, like hydrapick's.
    """
    result = Result(name, ds.name, len(ds.micrographs), {"typed": diameter_factor})
    relion = shutil.which("relion_autopick")
    if relion is None:
        result.error = "relion_autopick not on PATH; install RELION 3.1 (Debian: apt-get install relion)"
        return result
    work = out_dir / f"{name}_work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = [p.name for p in ds.micrographs]
    for p in ds.micrographs:
        (work / p.name).symlink_to(p.resolve())
    micrographs_star(work / "micrographs.star", names, ds.pixel_size_A)
    low, high = (f * ds.diameter_A * diameter_factor for f in diameter_range)

    def command(odir: str, adjust: float) -> list[str]:
        return [relion, "--i", "micrographs.star", "--odir", odir, "--pickname", "autopick", "--LoG",
                "--LoG_diam_min", f"{low:g}", "--LoG_diam_max", f"{high:g}", "--lowpass", f"{lowpass_A:g}",
                "--LoG_adjust_threshold", f"{adjust:g}", "--LoG_upper_threshold", f"{upper_threshold:g}",
                "--angpix", f"{ds.pixel_size_A:g}", *(["--Log_invert"] if invert else []), *extra]

    if not timed([(command("picks/", adjust_threshold), "relion_autopick --LoG")], result, cwd=work):
        return result
    result.candidates = gather_relion(work / "picks", names, out_dir / f"{name}.txt")
    if default_run:
        try:
            run_checked(command("default/", 0.0), "relion_autopick --LoG (default threshold)", cwd=work)
            result.default_output = gather_relion(work / "default", names, out_dir / f"{name}_default.txt")
        except RuntimeError as exc:
            result.error = str(exc)
    return result


def micrographs_star(path: Path, names: list[str], pixel_size_A: float) -> Path:
    """A RELION 3.1 micrographs STAR: one optics group (pixel size; voltage, Cs and amplitude contrast are
    required but unused by LoG without --LoG_use_ctf), then the micrograph names."""
    lines = ["data_optics", "loop_", "_rlnOpticsGroupName #1", "_rlnOpticsGroup #2",
             "_rlnMicrographPixelSize #3", "_rlnVoltage #4", "_rlnSphericalAberration #5",
             "_rlnAmplitudeContrast #6", f"opticsGroup1 1 {pixel_size_A:.6f} 300 2.7 0.1", "",
             "data_micrographs", "loop_", "_rlnMicrographName #1", "_rlnOpticsGroup #2",
             *[f"{n} 1" for n in names], ""]
    path.write_text("\n".join(lines))
    return path


def gather_relion(folder: Path, names: list[str], output: Path) -> Path:
    """RELION's ``<micrograph>_autopick.star`` files as one Topaz-format file named by micrograph."""
    parts = []
    for n in names:
        star = folder / f"{Path(n).stem}_autopick.star"
        parts.append(io.read_coordinates(star).with_micrograph(Path(n).stem) if star.exists()
                     else Picks.empty())
    io.write_coordinates(Picks.concat(parts), output, "topaz")
    return output


def topaz_user_scale(diameter_px: float) -> int:
    """The ``topaz preprocess -s`` a user derives from the diameter (see TOPAZ_PARTICLE_PX)."""
    return max(1, round(diameter_px / TOPAZ_PARTICLE_PX))


def run_topaz(ds: Dataset, out_dir: Path, *, scale: int | None = None, diameter_factor: float = 1.0,
              threshold: float = -6.0, model: str = "resnet16_u64", threads: int = 0,
              venv: Path = TOPAZ_VENV, name: str = "topaz") -> Result:
    """Pretrained Topaz: ``topaz preprocess -s S`` (Fourier downsampling, GMM normalisation), then
    ``topaz extract`` with the typed radius in downsampled pixels; ``-x S`` maps coordinates back to the
    micrograph's pixels (downsampled pixel j sits at original pixel j * S).

    ``scale`` None: the value a user derives from the typed diameter (`topaz_user_scale`). Topaz's
    default threshold (-6) keeps every candidate, so precision and recall are those of all of them.
    """
    typed_px = ds.diameter_px * diameter_factor
    scale = scale or topaz_user_scale(typed_px)
    result = Result(name, ds.name, len(ds.micrographs), {"typed": diameter_factor, "topaz_s": scale},
                    default_threshold=threshold)
    topaz = venv / "bin" / "topaz"
    if not topaz.exists():
        result.error = f"{topaz} not found; run benchmarks/topaz_setup.sh"
        return result
    output, work = out_dir / f"{name}_s{scale}.txt", out_dir / f"{name}_s{scale}_preprocessed"
    radius = max(1, round(typed_px / scale / 2))
    preprocess = topaz_preprocess(ds.micrographs, work, scale, threads=threads, venv=venv)
    extract = [str(topaz), "extract", "-m", model, "-r", str(radius), "-t", f"{threshold:g}",
               "-x", str(scale), "-d", "-1", "-j", str(threads), "-o", str(output),
               *[str(work / p.name) for p in ds.micrographs]]
    if timed([(preprocess, "topaz preprocess"), (extract, "topaz extract")], result):
        result.candidates = output
    shutil.rmtree(work, ignore_errors=True)
    return result


def topaz_preprocess(micrographs: list[Path], work: Path, scale: int, *, threads: int = 0,
                     venv: Path = TOPAZ_VENV) -> list[str]:
    """The ``topaz preprocess`` command writing the micrographs, downsampled ``scale`` times and normalised,
    into ``work`` under their own names."""
    return [str(venv / "bin" / "topaz"), "preprocess", "-s", str(scale), "-d", "-1", "-j", str(threads),
            "-o", str(work), *map(str, micrographs)]


# --- scoring and results -----------------------------------------------------------------------------------

def score(result: Result, ds: Dataset) -> EvaluationReport | None:
    """Score a run against the dataset's truth inside its edge rule (box = labelled diameter, IoU > 0.6).

    Sets ``result.report`` (every candidate) and ``result.default_report`` (the default output, or the
    candidates at ``default_threshold``); returns the first (None when the picker gave no output).
    """
    if result.candidates is None:
        return None
    candidates = ds.in_region(load_coordinates(result.candidates).picks)
    result.report = evaluate(ds.truth, candidates, ds.diameter_px, micrographs=ds.keys)
    if result.default_output is not None:
        picks = ds.in_region(load_coordinates(result.default_output).picks)
        result.default_report = evaluate(ds.truth, picks, ds.diameter_px, micrographs=ds.keys)
    else:
        result.default_report = evaluate(ds.truth, candidates, ds.diameter_px, micrographs=ds.keys,
                                         threshold=result.default_threshold)
    return result.report


def best(results: list[Result]) -> Result | None:
    """The scored run with the highest AP (None if none was scored)."""
    scored = [r for r in results if r.report is not None]
    return max(scored, key=lambda r: r.report.ap) if scored else None


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """Rows as a fixed-width table; ``columns`` are (key, header, format) and a missing value prints '-'."""
    def cell(row: dict, key: str, fmt: str) -> str:
        value = row.get(key)
        return "-" if value is None or value == "" else format(value, fmt)

    cells = [[header for _, header, _ in columns]] + [[cell(r, k, f) for k, _, f in columns] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths,
                                                                                           strict=True)))
             for line in cells]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def results_path(benchmark: str, args: argparse.Namespace) -> Path:
    """Where a run writes its results: ``--results``, else benchmarks/results/ for a full run and
    cache/benchmarks/ for a run on a subset (so a smoke run never replaces the current results)."""
    if getattr(args, "results", None):
        return args.results
    subset = any(getattr(args, k, None) for k in ("micrographs", "sets", "subset"))
    return (CACHE if subset else RESULTS) / f"{benchmark}.json"


def write_results(path: Path, benchmark: str, rows: list[dict], **about) -> Path:
    """One JSON file: the command that ran, where and when, and one plain dict per row."""
    import torch

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    payload = {"benchmark": benchmark, "command": shorten(["python", *sys.argv]),
               "commit": commit.stdout.strip() or None,
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "cpus": os.cpu_count(), "torch": torch.__version__, "load_average": os.getloadavg()[0],
               **about, "rows": rows}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=1) + "\n")
    return path


# --- command-line options shared by the entry points -------------------------------------------------------

def add_dataset_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("datasets")
    group.add_argument("--sets", help="comma-separated real sets (default: every set in "
                                      "../shared/data/real); 'none' for none")
    group.add_argument("--split", default="all", help="split(s) of meta.json, e.g. test or train,valid "
                                                      "(default: all micrographs)")
    group.add_argument("--micrographs", type=int, help="the first N micrographs of each set (a smoke run)")
    group.add_argument("--simulated", default=",".join(HELD_OUT),
                       help="held-out structures to simulate, comma-separated, or 'none' (default: "
                            f"{','.join(HELD_OUT)}; 4 micrographs each, 1024 px, particles 40 px across)")
    group.add_argument("--out", type=Path, help="work folder for every picker's output (default: "
                                                "cache/benchmarks/<entry point>)")
    group.add_argument("--results", type=Path, help="results file (default: benchmarks/results/<entry "
                                                    "point>.json; cache/benchmarks/ for a subset)")


def datasets(args: argparse.Namespace) -> list[Dataset]:
    names = None if args.sets is None else [s for s in args.sets.split(",") if s and s != "none"]
    sets = real_sets(names, split=args.split, micrographs=args.micrographs) if names != [] else []
    structures = tuple(s for s in args.simulated.split(",") if s and s != "none")
    if structures:
        sets += simulated_targets(structures, n=min(args.micrographs or 4, 4))
    return sets


PICKERS = ("hydrapick", "relion-log", "topaz")


def accuracy_parser(doc: str, variants: dict[str, str]) -> argparse.ArgumentParser:
    """The options of an accuracy entry point: datasets, pickers, hydrapick variants and the peers'."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_dataset_options(parser)
    parser.add_argument("--pickers", default=",".join(PICKERS),
                        help=f"comma-separated, of {', '.join(PICKERS)} (default: all)")
    add_variant_option(parser, variants)
    add_peer_options(parser)
    return parser


def parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    args.pickers = [p.strip() for p in args.pickers.split(",") if p.strip()]
    if set(args.pickers) - set(PICKERS):
        parser.error(f"--pickers: unknown {sorted(set(args.pickers) - set(PICKERS))}; choose from "
                     f"{', '.join(PICKERS)}")
    return args


def add_peer_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("peers")
    group.add_argument("--device", default="cpu", help="hydrapick's device (default: cpu)")
    group.add_argument("--threads", type=int, help="hydrapick's --threads (default: every core)")
    group.add_argument("--topaz-scales", default=",".join(map(str, TOPAZ_SCALES)),
                       help="topaz preprocess -s values searched for Topaz's best (default: 1,2,3,4)")
    group.add_argument("--topaz-venv", type=Path, default=TOPAZ_VENV, help="environment of topaz_setup.sh")
    group.add_argument("--relion-invert", action="store_true", help="relion_autopick --Log_invert")


def topaz_scales(args: argparse.Namespace) -> list[int]:
    return [int(s) for s in args.topaz_scales.split(",") if s.strip()]


def add_variant_option(parser: argparse.ArgumentParser, defaults: dict[str, str]) -> None:
    """``--hydrapick-variant NAME="FLAGS"`` (repeatable): hydrapick rows, each `hydrapick pick` + FLAGS."""
    shown = " ".join(f'{k}="{v}"' for k, v in defaults.items())
    parser.add_argument("--hydrapick-variant", action="append", metavar='NAME="FLAGS"',
                        help="a hydrapick row: NAME and the extra `hydrapick pick` flags it runs with "
                             f"(repeatable; replaces the default rows: {shown})")


def hydrapick_variants(args: argparse.Namespace, defaults: dict[str, str]) -> dict[str, list[str]]:
    variants = {}
    for spec in args.hydrapick_variant or [f"{k}={v}" for k, v in defaults.items()]:
        name, sep, flags = spec.partition("=")
        if not sep or not name.strip():
            raise SystemExit(f'--hydrapick-variant {spec!r}: write NAME="FLAGS", e.g. nocal="--no-calibrate"')
        variants[name.strip()] = shlex.split(flags)
    return variants


def hydrapick_accepts(flag: str) -> bool:
    """Whether this build's ``hydrapick pick`` has an option (options other agents are adding)."""
    return flag in pick_help()


@functools.cache
def pick_help() -> str:
    return subprocess.run([*HYDRAPICK, "pick", "--help"], capture_output=True, text=True).stdout
