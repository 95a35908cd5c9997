#!/usr/bin/env python
"""Compare hydrapick with Topaz on the same micrographs and the same truth.

Each picker runs as its own command (``hydrapick pick``; ``topaz preprocess`` + ``topaz extract`` from
the environment built by benchmarks/topaz_setup.sh), writes its coordinates to a file, and is scored
with `hydrapick.evaluation` (IoU > 0.6 on boxes of the particle diameter). The table gives AP, best F1
and micrographs per second (wall time of the picker's commands, start-up and model loading included).

Datasets:
  real        ../shared/data/real/empiar-10028 (its meta.json gives the split, diameter and pixel size)
  simulated   micrographs made with ``hydrapick simulate`` from structures the bundled model was not
              trained on, in a temporary folder (or --workdir)

Every picker's output is kept under --out, so that for example
``hydrapick evaluate --truth <truth> --picks <out>/real/topaz.txt --box 56`` reproduces the table's AP.

Usage: python benchmarks/compare_pickers.py real [--out DIR] [--topaz-venv .venv-topaz] ...
       python benchmarks/compare_pickers.py simulated --structures A.pdb B.cif ... [--n 10]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hydrapick.evaluation import EvaluationReport, evaluate, load_coordinates
from hydrapick.picks import Picks, micrograph_key

ROOT = Path(__file__).resolve().parents[1]
REAL_DATA = ROOT.parent / "shared" / "data" / "real" / "empiar-10028"
TOPAZ_VENV = ROOT / ".venv-topaz"


@dataclass
class Dataset:
    """Micrographs with their true particles; one diameter and pixel size for all."""

    name: str
    micrographs: list[Path]
    truth: Picks
    diameter_A: float
    pixel_size_A: float
    truth_path: Path  # what `hydrapick evaluate --truth` should be given

    @property
    def box_px(self) -> float:
        return self.diameter_A / self.pixel_size_A

    @property
    def keys(self) -> list[str]:
        return [micrograph_key(p.name) for p in self.micrographs]


@dataclass
class Result:
    picker: str
    commands: list[list[str]] = field(default_factory=list)
    output: Path | None = None
    seconds: float = math.nan
    report: EvaluationReport | None = None
    error: str = ""

    @property
    def micrographs_per_second(self) -> float:
        return self.report.n_micrographs / self.seconds if self.report and self.seconds > 0 else math.nan


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


def simulated_dataset(workdir: Path, structures: list[Path], n_per_structure: int, seed: int,
                      extra_args: list[str]) -> Dataset:
    """Run ``hydrapick simulate`` once per structure and gather the micrographs and coordinates."""
    import tomllib

    micrographs: list[Path] = []
    truth_parts = []
    diameters, pixel_sizes = [], []
    truth_dir = workdir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    for i, structure in enumerate(structures):
        out = workdir / f"sim_{i}_{structure.stem}"
        command = ["hydrapick", "simulate", str(out), "-n", str(n_per_structure),
                   "--structure", str(structure), "--seed", str(seed + i), *extra_args]
        _run(command, f"simulation of {structure.name}")
        manifest = tomllib.loads((out / "manifest.toml").read_text())
        for mic in sorted((out / "micrographs").glob("*.mrc")):
            # Unique names across structures: prefix the structure, keep the simulator's stem.
            name = f"{structure.stem}_{mic.stem}"
            linked = workdir / "micrographs" / f"{name}.mrc"
            linked.parent.mkdir(exist_ok=True)
            shutil.copyfile(mic, linked)
            micrographs.append(linked)
            coords = load_coordinates(out / "coordinates" / f"{mic.stem}.star").picks.with_micrograph(name)
            truth_parts.append(coords)
            (truth_dir / f"{name}.star").write_text((out / "coordinates" / f"{mic.stem}.star").read_text())
            params = _manifest_entry(manifest, mic.stem)
            diameters.append(float(params["diameter_A"]))
            pixel_sizes.append(float(params["pixel_size_A"]))
    if len(set(np.round(pixel_sizes, 4))) > 1 or len(set(np.round(diameters, 2))) > 1:
        raise SystemExit("simulated micrographs differ in pixel size or diameter; pass fixed values to "
                         "hydrapick simulate with --simulate-args so one box fits all")
    return Dataset("simulated, held-out structures", micrographs, Picks.concat(truth_parts), diameters[0],
                   pixel_sizes[0], truth_dir)


def _manifest_entry(manifest: dict, stem: str) -> dict:
    """The parameters of one micrograph in a simulate manifest (a table per micrograph)."""
    for table in manifest.get("micrographs", []):
        if Path(str(table.get("path", table.get("name", "")))).stem == stem:
            return table
    if stem in manifest:
        return manifest[stem]
    raise SystemExit(f"manifest.toml has no entry for micrograph {stem}")


# --- pickers -----------------------------------------------------------------------------------------------

def run_hydrapick(ds: Dataset, out_dir: Path, *, model: str | None, head: str | None, threshold: float,
                  device: str) -> Result:
    result = Result("hydrapick")
    output = out_dir / "hydrapick.txt"
    command = ["hydrapick", "pick", *map(str, ds.micrographs), "--diameter", f"{ds.diameter_A:g}",
               "--apix", f"{ds.pixel_size_A:g}", "--format", "topaz", "-o", str(output),
               "--threshold", f"{threshold:g}", "--device", device, "--quiet"]
    if model:
        command += ["--model", model]
    if head:
        command += ["--head", head]
    result.commands.append(command)
    probe = subprocess.run(["hydrapick", "pick", "--help"], capture_output=True, text=True)
    if probe.returncode != 0 or "--diameter" not in probe.stdout:
        result.error = "hydrapick pick is not available in this build"
        return result
    try:
        start = time.perf_counter()
        _run(command, "hydrapick pick")
        result.seconds = time.perf_counter() - start
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
        start = time.perf_counter()
        _run(preprocess, "topaz preprocess")
        _run(extract, "topaz extract")
        result.seconds = time.perf_counter() - start
    except RuntimeError as exc:
        result.error = str(exc)
        return result
    shutil.rmtree(work, ignore_errors=True)
    result.output = output
    return result


def _run(command: list[str], what: str) -> None:
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{what} failed (exit {proc.returncode}): {' | '.join(tail)}")


# --- scoring and report ------------------------------------------------------------------------------------

def score(result: Result, ds: Dataset) -> None:
    if result.output is None:
        return
    picks = load_coordinates(result.output).picks
    result.report = evaluate(ds.truth, picks, ds.box_px, micrographs=ds.keys)


def table(ds: Dataset, results: list[Result]) -> str:
    lines = [f"{ds.name}: {len(ds.micrographs)} micrographs, {len(ds.truth)} particles, diameter "
             f"{ds.diameter_A:g} A at {ds.pixel_size_A:g} A/px (box {ds.box_px:.1f} px), IoU > 0.6",
             f"{'picker':<10} {'AP':>6} {'AUROC':>6} {'best F1':>7} {'at score':>9} {'R@P0.9':>6} "
             f"{'picks':>6} {'seconds':>8} {'mic/s':>6}"]
    for r in results:
        if r.report is None:
            lines.append(f"{r.picker:<10} unavailable: {r.error}")
            continue
        m = r.report
        lines.append(f"{r.picker:<10} {m.ap:6.3f} {m.auroc:6.3f} {m.best_f1:7.3f} {m.best_f1_threshold:9.3f} "
                     f"{m.recall_at_precision_0_9:6.3f} {m.n_picks:6d} {r.seconds:8.1f} "
                     f"{r.micrographs_per_second:6.2f}")
    return "\n".join(lines)


def summary(ds: Dataset, results: list[Result]) -> dict:
    return {
        "dataset": ds.name, "micrographs": [str(p) for p in ds.micrographs], "n_particles": len(ds.truth),
        "diameter_A": ds.diameter_A, "pixel_size_A": ds.pixel_size_A, "box_px": ds.box_px,
        "truth": str(ds.truth_path), "cpu_count": os.cpu_count(),
        "pickers": {r.picker: {
            "available": r.report is not None, "error": r.error or None,
            "commands": [shlex.join(c) for c in r.commands], "output": str(r.output) if r.output else None,
            "seconds": None if math.isnan(r.seconds) else r.seconds,
            "micrographs_per_second": (None if math.isnan(r.micrographs_per_second)
                                       else r.micrographs_per_second),
            "scores": r.report.to_dict(per_micrograph=True) if r.report else None,
        } for r in results},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["real", "simulated"])
    parser.add_argument("--out", type=Path, help="folder for each picker's output and summary.json "
                                                 "(default: a new temporary folder, kept)")
    parser.add_argument("--pickers", default="hydrapick,topaz", help="comma-separated (default: both)")
    real = parser.add_argument_group("real data")
    real.add_argument("--data", type=Path, default=REAL_DATA, help="EMPIAR-10028 folder with meta.json")
    real.add_argument("--split", default="test",
                      help="split(s) of meta.json to pick, comma-separated (default: test)")
    sim = parser.add_argument_group("simulated data")
    sim.add_argument("--structures", type=Path, nargs="+", help="PDB/mmCIF files not used to train the model")
    sim.add_argument("--n", type=int, default=4, help="micrographs per structure (default: 4)")
    sim.add_argument("--seed", type=int, default=1000, help="simulation seed (default: 1000)")
    sim.add_argument("--simulate-args", default="", help="extra arguments for hydrapick simulate (quoted)")
    hp = parser.add_argument_group("hydrapick")
    hp.add_argument("--model", help="checkpoint (default: the bundled generic model)")
    hp.add_argument("--head", help="head name (default: generic)")
    hp.add_argument("--hydrapick-threshold", type=float, default=0.05,
                    help="score cut for hydrapick's output; low, so that AP sees the whole curve "
                         "(default: 0.05)")
    hp.add_argument("--device", default="cpu", help="device for hydrapick (default: cpu)")
    tz = parser.add_argument_group("Topaz")
    tz.add_argument("--topaz-venv", type=Path, default=TOPAZ_VENV, help="environment from topaz_setup.sh")
    tz.add_argument("--topaz-model", default="resnet16_u64", help="pretrained model (default: resnet16_u64)")
    tz.add_argument("--topaz-scale", type=int, default=2, help="downsampling factor for topaz preprocess")
    tz.add_argument("--topaz-threshold", type=float, default=-6.0,
                    help="log-likelihood threshold for topaz extract (Topaz's default: -6)")
    tz.add_argument("--threads", type=int, default=0, help="Topaz threads (0: PyTorch default)")
    args = parser.parse_args(argv)

    out = args.out or Path(tempfile.mkdtemp(prefix="hydrapick-compare-"))
    out_dir = out / args.dataset
    out_dir.mkdir(parents=True, exist_ok=True)
    if args.dataset == "real":
        ds = real_dataset(args.data, args.split, out_dir)
    else:
        if not args.structures:
            parser.error("simulated needs --structures (structures the model was not trained on)")
        ds = simulated_dataset(out_dir / "simulated", args.structures, args.n, args.seed,
                               shlex.split(args.simulate_args))

    results = []
    pickers = [p.strip() for p in args.pickers.split(",") if p.strip()]
    if "hydrapick" in pickers:
        results.append(run_hydrapick(ds, out_dir, model=args.model, head=args.head,
                                     threshold=args.hydrapick_threshold, device=args.device))
    if "topaz" in pickers:
        results.append(run_topaz(ds, out_dir, venv=args.topaz_venv, scale=args.topaz_scale,
                                 threshold=args.topaz_threshold, model=args.topaz_model,
                                 threads=args.threads))
    for r in results:
        score(r, ds)
    print(table(ds, results))
    (out_dir / "summary.json").write_text(json.dumps(summary(ds, results), indent=1) + "\n")
    print(f"\noutputs and summary.json in {out_dir}")
    for r in results:
        if r.output is not None:
            print(f"check: hydrapick evaluate --truth {ds.truth_path} --picks {r.output} "
                  f"--diameter {ds.diameter_A!r} --apix {ds.pixel_size_A!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
