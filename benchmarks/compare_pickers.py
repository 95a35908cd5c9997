#!/usr/bin/env python
"""Compare hydrapick with Topaz and RELION's Laplacian-of-Gaussian picker on the same micrographs and truth.

Each picker runs as its own command (``python -m hydrapick pick``; ``topaz preprocess`` + ``topaz extract``
from the environment built by benchmarks/topaz_setup.sh; ``relion_autopick --LoG`` from RELION 3.1 on
PATH), writes its coordinates to a file, and is scored with `hydrapick.evaluation` (IoU > 0.6 on boxes of
the particle diameter). One edge rule is applied to the truth and to every picker's picks alike (centres
closer than --border-A to the edge are left out; default half the diameter, `hydrapick pick`'s own rule),
because the pickers differ at the edge: hydrapick drops particles cut by it, RELION's LoG keeps centres
from about half its smallest diameter inwards, Topaz keeps every centre. The table gives AP, best F1 and
seconds per micrograph (wall time of the picker's commands, start-up and model loading included).

Datasets:
  real        ../shared/data/real/empiar-10028 (its meta.json gives the split, diameter and pixel size)
  simulated   micrographs made with ``hydrapick simulate`` from structures the bundled model was not
              trained on (one dataset per structure; default: the held-out targets 4hhb, 6b7n, 6msm)

Every picker's output is kept under --out; the script prints a ``hydrapick evaluate`` command per picker
that reproduces the table's numbers from those files.

Usage: python benchmarks/compare_pickers.py real [--out DIR] [--pickers hydrapick,relion-log,topaz] ...
       python benchmarks/compare_pickers.py simulated [--structures A.pdb B.cif ...] [--n 4]
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import mrcfile
import numpy as np

from hydrapick.evaluation import EvaluationReport, drop_near_edge, evaluate, load_coordinates
from hydrapick.picks import Picks, micrograph_key

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "real" / "empiar-10028"
STRUCTURES = ROOT.parent / "shared" / "data" / "structures"
# The generic model's held-out zero-shot targets (recipes/generic/targets.txt): never in its training corpus.
HELD_OUT = ("4hhb.pdb", "6b7n.pdb", "6msm.pdb")
TOPAZ_VENV = ROOT / ".venv-topaz"
# The hydrapick of this interpreter (the one whose evaluation scores the table), not whatever console script
# named `hydrapick` comes first on PATH.
HYDRAPICK = [sys.executable, "-m", "hydrapick"]
PICKERS = ("hydrapick", "hydrapick-scales", "hydrapick-adapt", "relion-log", "topaz")
# Run unless --pickers names them: hydrapick-adapt costs minutes per dataset on a CPU, hydrapick-scales
# (pick --scales, --hydrapick-scales) a network pass per scale.
DEFAULT_PICKERS = ("hydrapick", "relion-log", "topaz")


@dataclass
class Dataset:
    """Micrographs with their true particles; one diameter and pixel size for all."""

    name: str
    micrographs: list[Path]
    truth: Picks
    diameter_A: float
    pixel_size_A: float
    truth_path: Path  # what `hydrapick evaluate --truth` should be given
    border_A: float | None = None  # edge rule for truth and picks alike; None: no rule

    @property
    def box_px(self) -> float:
        return self.diameter_A / self.pixel_size_A

    @property
    def keys(self) -> list[str]:
        return [micrograph_key(p.name) for p in self.micrographs]

    def in_region(self, picks: Picks) -> Picks:
        """The picks on this dataset's micrographs whose centre is at least ``border_A`` from the edge.

        The same rule as ``hydrapick pick --border`` and ``hydrapick evaluate --border``
        (`hydrapick.evaluation.drop_near_edge`), applied to the truth and to every picker.
        """
        picks = picks[np.isin([micrograph_key(m) for m in picks.micrograph], self.keys)]
        if self.border_A is None:
            return picks
        return drop_near_edge(picks, self.shapes, self.border_A / self.pixel_size_A)

    @functools.cached_property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """(rows, columns) of each micrograph, from the MRC headers."""
        shapes = {}
        for path in self.micrographs:
            with mrcfile.open(path, header_only=True, permissive=True) as mrc:
                shapes[micrograph_key(path.name)] = (int(mrc.header.ny), int(mrc.header.nx))
        return shapes


@dataclass
class Result:
    picker: str
    commands: list[list[str]] = field(default_factory=list)
    output: Path | None = None
    seconds: float = math.nan  # wall time of the picker's commands
    cpu_seconds: float = math.nan  # user + system CPU time of those commands (less sensitive to load)
    report: EvaluationReport | None = None
    error: str = ""

    @property
    def micrographs_per_second(self) -> float:
        return self.report.n_micrographs / self.seconds if self.report and self.seconds > 0 else math.nan

    @property
    def seconds_per_micrograph(self) -> float:
        return self.seconds / self.report.n_micrographs if self.report else math.nan

    @property
    def cpu_seconds_per_micrograph(self) -> float:
        return self.cpu_seconds / self.report.n_micrographs if self.report else math.nan


# --- datasets ----------------------------------------------------------------------------------------------

def real_dataset(root: Path, split: str, out_dir: Path) -> Dataset:
    """The micrographs of one or more splits (``test`` or ``train,valid``) of meta.json.

    Their truth files are copied to ``out_dir/truth`` so that ``hydrapick evaluate --truth`` on that
    folder scores exactly these micrographs.
    """
    meta = json.loads((root / "meta.json").read_text())
    names = [n for part in split.split(",") for n in meta["split"][part.strip()]]
    micrographs = [root / "micrographs" / f"{n}.mrc" for n in names]
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    for n in names:
        shutil.copyfile(root / "truth" / f"{n}.star", truth_dir / f"{n}.star")
    truth = load_coordinates(truth_dir).picks
    return Dataset(f"empiar-10028 {split}", micrographs, truth, float(meta["diameter_A"]),
                   float(meta["pixel_size_A"]), truth_dir)


def simulated_datasets(workdir: Path, structures: list[Path], n_per_structure: int, seed: int,
                       diameter_px: float, size: str, extra_args: list[str]) -> list[Dataset]:
    """One dataset per structure, made with ``hydrapick simulate`` (each structure is one specimen).

    The pixel size is set by the simulator so that the particle is ``diameter_px`` wide, the same on
    every micrograph of a structure, so one box and one ``--diameter`` fit the whole dataset.
    """
    import tomllib

    datasets = []
    for i, structure in enumerate(structures):
        out = workdir / structure.stem
        if not (out / "manifest.toml").exists():
            command = [*HYDRAPICK, "simulate", "-q", "-n", str(n_per_structure), "-o", str(out),
                       "--structure", str(structure), "--seed", str(seed + i), "--size", size,
                       "--diameter-px", f"{diameter_px:g}", *extra_args]
            _run(command, f"hydrapick simulate of {structure.name}")
        manifest = tomllib.loads((out / "manifest.toml").read_text())
        entries = manifest["micrograph"]
        pixel_sizes = {round(float(e["pixel_size_A"]), 6) for e in entries}
        diameters = {round(float(e["diameter_A"]), 4) for e in entries}
        if len(pixel_sizes) > 1 or len(diameters) > 1:
            raise SystemExit(f"{out}: micrographs differ in pixel size or diameter; one box must fit all")
        micrographs = [out / e["micrograph"] for e in entries]
        truth = load_coordinates(out / "coordinates").picks
        datasets.append(Dataset(f"simulated {structure.stem} (held out)", micrographs, truth,
                                float(entries[0]["diameter_A"]), float(entries[0]["pixel_size_A"]),
                                out / "coordinates"))
    return datasets


# --- pickers -----------------------------------------------------------------------------------------------

def run_hydrapick(ds: Dataset, out_dir: Path, *, model: str | None, head: str | None, threshold: float,
                  device: str, adapt: bool = False, scales: str | None = None) -> Result:
    """``hydrapick pick`` (with ``--adapt``: label-free adaptation on the dataset's own micrographs; with
    ``scales``: ``--scales``, picked at several multiples of the diameter and merged)."""
    result = Result("hydrapick-adapt" if adapt else "hydrapick-scales" if scales else "hydrapick")
    output = out_dir / f"{result.picker}.txt"
    command = [*HYDRAPICK, "pick", *map(str, ds.micrographs), "--diameter", f"{ds.diameter_A:g}",
               "--apix", f"{ds.pixel_size_A:g}", "--format", "topaz", "-o", str(output),
               "--threshold", f"{threshold:g}", "--device", device, "--quiet"]
    if adapt:
        command += ["--adapt", "--adapt-output", str(out_dir / "adapted.pt")]
    if scales:
        command += ["--scales", scales]
    if model:
        command += ["--model", model]
    if head:
        command += ["--head", head]
    result.commands.append(command)
    probe = subprocess.run([*HYDRAPICK, "pick", "--help"], capture_output=True, text=True)
    if probe.returncode != 0 or "--diameter" not in probe.stdout:
        result.error = "hydrapick pick is not available in this build"
        return result
    try:
        result.seconds, result.cpu_seconds = _timed([(command, "hydrapick pick")])
    except RuntimeError as exc:
        result.error = str(exc)
        return result
    result.output = output
    return result


def run_topaz(ds: Dataset, out_dir: Path, *, venv: Path, scale: int, threshold: float, model: str,
              threads: int) -> Result:
    """``topaz preprocess`` (downsample by ``scale``, GMM normalisation) then ``topaz extract``.

    The extraction radius is the particle radius in downsampled pixels; ``--up-scale`` maps the
    coordinates back to pixels of the micrographs as read (Topaz downsamples by Fourier cropping, so
    downsampled pixel j sits at original pixel j * scale).
    """
    result = Result("topaz")
    topaz = venv / "bin" / "topaz"
    if not topaz.exists():
        result.error = f"{topaz} not found; run benchmarks/topaz_setup.sh"
        return result
    output = out_dir / "topaz.txt"
    work = out_dir / "topaz_preprocessed"
    radius = max(1, round(ds.box_px / scale / 2))
    preprocess = [str(topaz), "preprocess", "-s", str(scale), "-d", "-1", "-j", str(threads),
                  "-o", str(work), *map(str, ds.micrographs)]
    extract = [str(topaz), "extract", "-m", model, "-r", str(radius), "-t", f"{threshold:g}",
               "-x", str(scale), "-d", "-1", "-j", str(threads), "-o", str(output),
               *[str(work / p.name) for p in ds.micrographs]]
    result.commands += [preprocess, extract]
    try:
        result.seconds, result.cpu_seconds = _timed([(preprocess, "topaz preprocess"),
                                                     (extract, "topaz extract")])
    except RuntimeError as exc:
        result.error = str(exc)
        return result
    shutil.rmtree(work, ignore_errors=True)
    result.output = output
    return result


def run_relion_log(ds: Dataset, out_dir: Path, *, diameter_range: tuple[float, float], lowpass_A: float,
                   adjust_threshold: float, upper_threshold: float, invert: bool) -> Result:
    """RELION 3.1's Laplacian-of-Gaussian picker (``relion_autopick --LoG``), one command for all micrographs.

    RELION reads a micrographs STAR in 3.1 format (an optics block with the pixel size) and writes one
    ``<micrograph>_autopick.star`` per micrograph, ranked by ``_rlnAutopickFigureOfMerit``. The micrographs
    are linked into a work folder and listed by bare name, so that RELION's output names are predictable
    (it mirrors the micrographs' relative paths inside --odir). A low ``adjust_threshold`` keeps nearly
    every candidate, so that AP sees the whole ranking, as hydrapick's and Topaz's score floors do. The
    per-micrograph files are gathered into ``relion-log.txt`` (Topaz text format, micrograph pixels);
    RELION's coordinates are in pixels of the micrograph as read, y down, like hydrapick's.
    """
    result = Result("relion-log")
    relion = shutil.which("relion_autopick")
    if relion is None:
        result.error = ("relion_autopick not on PATH; install RELION 3.1 (Debian/Ubuntu: "
                        "apt-get install -y relion)")
        return result
    work = out_dir / "relion_log"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    names = [p.name for p in ds.micrographs]
    if len(set(names)) != len(names):
        result.error = "micrographs share a file name in different folders; RELION's outputs would clash"
        return result
    for p in ds.micrographs:
        (work / p.name).symlink_to(p.resolve())
    _write_relion_micrographs_star(work / "micrographs.star", names, ds.pixel_size_A)
    low, high = diameter_range
    command = [relion, "--i", "micrographs.star", "--odir", "picks/", "--pickname", "autopick", "--LoG",
               "--LoG_diam_min", f"{low * ds.diameter_A:g}", "--LoG_diam_max", f"{high * ds.diameter_A:g}",
               "--lowpass", f"{lowpass_A:g}", "--LoG_adjust_threshold", f"{adjust_threshold:g}",
               "--LoG_upper_threshold", f"{upper_threshold:g}", "--angpix", f"{ds.pixel_size_A:g}"]
    if invert:
        command.append("--Log_invert")
    result.commands.append(command)
    try:
        result.seconds, result.cpu_seconds = _timed([(command, "relion_autopick --LoG")], cwd=work)
    except RuntimeError as exc:
        result.error = str(exc)
        return result
    import hydrapick.io as io

    found = [work / "picks" / f"{Path(n).stem}_autopick.star" for n in names]
    missing = [f.name for f in found if not f.exists()]
    if missing:
        result.error = f"relion_autopick wrote no {missing[0]} (and {len(missing) - 1} more missing)"
        return result
    # The micrograph name of each pick is its micrograph's, as in the other pickers' files.
    parts = [io.read_coordinates(f).with_micrograph(Path(n).stem) for n, f in zip(names, found, strict=True)]
    output = out_dir / "relion-log.txt"
    io.write_coordinates(Picks.concat(parts), output, "topaz")
    result.output = output
    return result


def _write_relion_micrographs_star(path: Path, names: list[str], pixel_size_A: float) -> None:
    """A RELION 3.1 micrographs STAR: one optics group with the pixel size, then the micrograph names.

    Voltage, Cs and amplitude contrast are required columns but unused by the LoG picker without
    --LoG_use_ctf; typical values are written.
    """
    lines = ["", "# version 30001", "", "data_optics", "", "loop_", "_rlnOpticsGroupName #1",
             "_rlnOpticsGroup #2", "_rlnMicrographPixelSize #3", "_rlnVoltage #4",
             "_rlnSphericalAberration #5", "_rlnAmplitudeContrast #6",
             f"opticsGroup1 1 {pixel_size_A:.6f} 300.0 2.7 0.1", "", "", "# version 30001", "",
             "data_micrographs", "", "loop_", "_rlnMicrographName #1", "_rlnOpticsGroup #2",
             *[f"{n} 1" for n in names], ""]
    path.write_text("\n".join(lines))


def _timed(steps: list[tuple[list[str], str]], cwd: Path | None = None) -> tuple[float, float]:
    """Run commands one after the other; wall seconds and CPU seconds (user + system) of the children."""
    def cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    wall, used = time.perf_counter(), cpu()
    for command, what in steps:
        _run(command, what, cwd)
    return time.perf_counter() - wall, cpu() - used


def _run(command: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


# --- scoring and report ------------------------------------------------------------------------------------

def previous_results(summary_path: Path, pickers: list[str]) -> list[Result]:
    """The pickers' commands, outputs and timings recorded by an earlier run (for --score-only)."""
    if not summary_path.exists():
        raise SystemExit(f"{summary_path} not found: --score-only needs an earlier run with the same --out")
    recorded = json.loads(summary_path.read_text())["pickers"]
    results = []
    for name in pickers:
        entry = recorded.get(name)
        if entry is None:
            continue
        nan = math.nan
        results.append(Result(
            name, commands=[shlex.split(c) for c in entry["commands"]],
            output=Path(entry["output"]) if entry["output"] else None,
            seconds=entry["seconds"] if entry["seconds"] is not None else nan,
            cpu_seconds=entry.get("cpu_seconds") if entry.get("cpu_seconds") is not None else nan,
            error=entry["error"] or ""))
    return results


def score(result: Result, ds: Dataset) -> None:
    """Score a picker's output against the dataset's truth, both inside the dataset's edge rule."""
    if result.output is None:
        return
    picks = load_coordinates(result.output).picks
    result.report = evaluate(ds.in_region(ds.truth), ds.in_region(picks), ds.box_px, micrographs=ds.keys)


def describe(ds: Dataset) -> str:
    """One line: micrographs, particles scored, particle size, edge rule and match rule."""
    edge = ("no edge rule" if ds.border_A is None else
            f"truth and picks >= {ds.border_A:g} A ({ds.border_A / ds.pixel_size_A:.1f} px) from the edge")
    return (f"{ds.name}: {len(ds.micrographs)} micrographs, {len(ds.in_region(ds.truth))} of "
            f"{len(ds.truth)} particles scored ({edge}), diameter {ds.diameter_A:g} A at "
            f"{ds.pixel_size_A:g} A/px (box {ds.box_px:.1f} px), IoU > 0.6")


def table(ds: Dataset, results: list[Result]) -> str:
    lines = [describe(ds),
             f"{'picker':<10} {'AP':>6} {'AUROC':>6} {'best F1':>7} {'at score':>9} {'R@P0.9':>6} "
             f"{'picks':>6} {'wall s':>8} {'s/mic':>7} {'CPU s/mic':>9}"]
    for r in results:
        if r.report is None:
            lines.append(f"{r.picker:<10} unavailable: {r.error}")
            continue
        m = r.report
        lines.append(f"{r.picker:<10} {m.ap:6.3f} {m.auroc:6.3f} {m.best_f1:7.3f} {m.best_f1_threshold:9.3g} "
                     f"{m.recall_at_precision_0_9:6.3f} {m.n_picks:6d} {r.seconds:8.1f} "
                     f"{r.seconds_per_micrograph:7.2f} {r.cpu_seconds_per_micrograph:9.2f}")
    return "\n".join(lines)


def mean_table(all_results: list[list[Result]]) -> str:
    """Mean AP and best F1 over datasets, per picker (only pickers scored on every dataset)."""
    lines = ["mean over datasets", f"{'picker':<10} {'AP':>6} {'best F1':>7} {'datasets':>8}"]
    for name in dict.fromkeys(r.picker for results in all_results for r in results):
        reports = [r.report for results in all_results for r in results if r.picker == name]
        if any(rep is None for rep in reports) or len(reports) != len(all_results):
            lines.append(f"{name:<10} unavailable on some datasets")
            continue
        lines.append(f"{name:<10} {np.mean([m.ap for m in reports]):6.3f} "
                     f"{np.mean([m.best_f1 for m in reports]):7.3f} {len(reports):8d}")
    return "\n".join(lines)


def summary(ds: Dataset, results: list[Result]) -> dict:
    return {
        "dataset": ds.name, "micrographs": [str(p) for p in ds.micrographs], "n_particles": len(ds.truth),
        "diameter_A": ds.diameter_A, "pixel_size_A": ds.pixel_size_A, "box_px": ds.box_px,
        "truth": str(ds.truth_path), "border_A": ds.border_A,
        "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
        "pickers": {r.picker: {
            "available": r.report is not None, "error": r.error or None,
            "commands": [shlex.join(c) for c in r.commands], "output": str(r.output) if r.output else None,
            "seconds": None if math.isnan(r.seconds) else r.seconds,
            "cpu_seconds": None if math.isnan(r.cpu_seconds) else r.cpu_seconds,
            "micrographs_per_second": (None if math.isnan(r.micrographs_per_second)
                                       else r.micrographs_per_second),
            "seconds_per_micrograph": (None if math.isnan(r.seconds_per_micrograph)
                                       else r.seconds_per_micrograph),
            "scores": r.report.to_dict(per_micrograph=True) if r.report else None,
        } for r in results},
    }


def add_picker_options(parser: argparse.ArgumentParser) -> None:
    """Options shared with preprocess_variants.py: which pickers, their settings and the edge rule."""
    parser.add_argument("--pickers", default=",".join(DEFAULT_PICKERS),
                        help=f"comma-separated, of {', '.join(PICKERS)} (default: "
                             f"{', '.join(DEFAULT_PICKERS)}; a picker that is not installed gets a row that "
                             "says so)")
    parser.add_argument("--border-A", type=float,
                        help="leave out true particles and picks whose centre is closer than this (A) to the "
                             "edge (default: half the diameter, hydrapick pick's own rule)")
    parser.add_argument("--no-border", action="store_true", help="no edge rule (every true particle scored)")
    hp = parser.add_argument_group("hydrapick")
    hp.add_argument("--model", help="checkpoint (default: the bundled generic model)")
    hp.add_argument("--head", help="head name (default: generic)")
    hp.add_argument("--hydrapick-threshold", type=float, default=0.05,
                    help="score cut for hydrapick's output; low, so that AP sees the whole curve "
                         "(default: 0.05)")
    hp.add_argument("--hydrapick-scales", default="0.89,1,1.12",
                    help="the hydrapick-scales picker's --scales (default: 0.89,1,1.12)")
    hp.add_argument("--device", default="cpu", help="device for hydrapick (default: cpu)")
    rl = parser.add_argument_group("RELION LoG (relion_autopick --LoG, RELION 3.1 on PATH)")
    rl.add_argument("--relion-diameters", default="0.8,1.2",
                    help="--LoG_diam_min,--LoG_diam_max as fractions of the diameter (default: 0.8,1.2)")
    rl.add_argument("--relion-lowpass", type=float, default=20.0, help="--lowpass in A (default: 20)")
    rl.add_argument("--relion-adjust-threshold", type=float, default=-1.0,
                    help="--LoG_adjust_threshold; low keeps nearly every candidate for AP (default: -1)")
    rl.add_argument("--relion-upper-threshold", type=float, default=99999.0,
                    help="--LoG_upper_threshold (default: 99999, RELION's own: no upper limit)")
    rl.add_argument("--relion-invert", action="store_true", help="--Log_invert: particles are white")
    tz = parser.add_argument_group("Topaz")
    tz.add_argument("--topaz-venv", type=Path, default=TOPAZ_VENV, help="environment from topaz_setup.sh")
    tz.add_argument("--topaz-model", default="resnet16_u64", help="pretrained model (default: resnet16_u64)")
    tz.add_argument("--topaz-scale", type=int, default=1,
                    help="downsampling factor for topaz preprocess (default: 1; see docs/benchmarks.md)")
    tz.add_argument("--topaz-threshold", type=float, default=-6.0,
                    help="log-likelihood threshold for topaz extract (Topaz's default: -6)")
    tz.add_argument("--threads", type=int, default=0, help="Topaz threads (0: PyTorch default)")


def picker_names(args: argparse.Namespace) -> list[str]:
    names = [p.strip() for p in args.pickers.split(",") if p.strip()]
    unknown = sorted(set(names) - set(PICKERS))
    if unknown:
        raise SystemExit(f"--pickers: unknown picker {unknown[0]!r}; choose from {', '.join(PICKERS)}")
    return names


def border_A(args: argparse.Namespace, diameter_A: float) -> float | None:
    """The edge rule of a run: None with --no-border, else --border-A or half the diameter."""
    if args.no_border:
        return None
    return diameter_A / 2 if args.border_A is None else args.border_A


def run_pickers(ds: Dataset, folder: Path, args: argparse.Namespace) -> list[Result]:
    """Run every picker of --pickers on one dataset, in the order of PICKERS, outputs under ``folder``."""
    results = []
    pickers = picker_names(args)
    if "hydrapick" in pickers:
        results.append(run_hydrapick(ds, folder, model=args.model, head=args.head,
                                     threshold=args.hydrapick_threshold, device=args.device))
    if "hydrapick-scales" in pickers:
        results.append(run_hydrapick(ds, folder, model=args.model, head=args.head,
                                     threshold=args.hydrapick_threshold, device=args.device,
                                     scales=args.hydrapick_scales))
    if "hydrapick-adapt" in pickers:
        results.append(run_hydrapick(ds, folder, model=args.model, head=args.head,
                                     threshold=args.hydrapick_threshold, device=args.device, adapt=True))
    if "relion-log" in pickers:
        low, high = (float(v) for v in args.relion_diameters.split(","))
        results.append(run_relion_log(ds, folder, diameter_range=(low, high), lowpass_A=args.relion_lowpass,
                                      adjust_threshold=args.relion_adjust_threshold,
                                      upper_threshold=args.relion_upper_threshold, invert=args.relion_invert))
    if "topaz" in pickers:
        results.append(run_topaz(ds, folder, venv=args.topaz_venv, scale=args.topaz_scale,
                                 threshold=args.topaz_threshold, model=args.topaz_model,
                                 threads=args.threads))
    return results


def check_command(ds: Dataset, result: Result) -> str:
    """A ``hydrapick evaluate`` command that reproduces a row of the table from the files kept."""
    command = [*HYDRAPICK, "evaluate", "--truth", str(ds.truth_path), "--picks", str(result.output),
               "--diameter", f"{ds.diameter_A!r}", "--apix", f"{ds.pixel_size_A!r}"]
    folders = {p.parent for p in ds.micrographs}
    if ds.border_A is not None and len(folders) == 1:
        command += ["--border", f"{ds.border_A!r}", "--micrographs", str(folders.pop())]
    return shlex.join(command)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["real", "simulated"])
    parser.add_argument("--out", type=Path, help="folder for each picker's output and summary.json "
                                                 "(default: a new temporary folder, kept)")
    parser.add_argument("--score-only", action="store_true",
                        help="do not run the pickers: score the outputs of an earlier run in --out again "
                             "(its timings are kept)")
    real = parser.add_argument_group("real data")
    real.add_argument("--data", type=Path, default=REAL_DATA, help="EMPIAR-10028 folder with meta.json")
    real.add_argument("--split", default="test",
                      help="split(s) of meta.json to pick, comma-separated (default: test)")
    sim = parser.add_argument_group("simulated data")
    sim.add_argument("--structures", type=Path, nargs="+",
                     help="PDB/mmCIF files the model was not trained on (default: the held-out targets of "
                          "recipes/generic/targets.txt: " + ", ".join(HELD_OUT) + ")")
    sim.add_argument("--n", type=int, default=4, help="micrographs per structure (default: 4)")
    sim.add_argument("--seed", type=int, default=5000, help="simulation seed of the first structure "
                                                            "(default: 5000)")
    sim.add_argument("--diameter-px", type=float, default=40.0,
                     help="particle diameter in pixels (default: 40)")
    sim.add_argument("--size", default="1024", help="micrograph size for hydrapick simulate (default: 1024)")
    sim.add_argument("--simulate-args", default="", help="extra arguments for hydrapick simulate (quoted)")
    add_picker_options(parser)
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="hydrapick-compare-"))
    if args.dataset == "real":
        datasets = [real_dataset(args.data, args.split, out / "real")]
        folders = [out / "real"]
    else:
        structures = args.structures or [STRUCTURES / name for name in HELD_OUT]
        datasets = simulated_datasets(out / "simulated", structures, args.n, args.seed, args.diameter_px,
                                      args.size, shlex.split(args.simulate_args))
        folders = [out / "simulated" / s.stem / "picks" for s in structures]
    all_results = []
    for ds, folder in zip(datasets, folders, strict=True):
        ds.border_A = border_A(args, ds.diameter_A)
        folder.mkdir(parents=True, exist_ok=True)
        if args.score_only:
            results = previous_results(folder / "summary.json", picker_names(args))
        else:
            results = run_pickers(ds, folder, args)
        for r in results:
            score(r, ds)
        print(table(ds, results) + "\n")
        (folder / "summary.json").write_text(json.dumps(summary(ds, results), indent=1) + "\n")
        all_results.append(results)
    if len(datasets) > 1:
        print(mean_table(all_results) + "\n")
    print(f"outputs and summary.json files under {out}")
    for ds, results in zip(datasets, all_results, strict=True):
        for r in results:
            if r.output is not None:
                print(f"check: {check_command(ds, r)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
