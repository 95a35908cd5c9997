"""Picking speed by detector and particle size: hydrapick beside RELION's LoG picker and Topaz.

    python benchmarks/speed.py --quick          # 3 cells (one per detector), 10 micrographs each
    python benchmarks/speed.py                  # all 9 cells: K2, K3, Falcon 4 x 100, 150, 300 A
    python benchmarks/speed.py --count 20 --cells K3:100 F4:150
    python benchmarks/speed.py --quick --relion-log gui full   # LoG also at full size

For each cell (a detector at its usual pixel size, a particle diameter) ``--count`` float32 MRC
micrographs of noise with dark blobs of the particle size are written to ``--work`` (reused when present),
and each picker of the harness runs on all of them as a command, exactly as a user would run it, timed
by the harness (wall, user + system CPU and the peak resident set of each process):

- ``hydrapick pick <mics> --diameter D --apix P --device cpu`` (the whole command: start-up, imports,
  model loading, reading, picking, writing);
- hydrapick in-process: ``hydrapick.pick`` in one Python process after one warm-up micrograph, so start-up
  and model loading are left out (seconds per micrograph of the steady state);
- RELION 3.1's LoG picker (``relion_autopick --LoG``, diameters 0.8-1.2 x D, ``--lowpass 20``, RELION's
  default threshold, one process, one core) in up to two configurations (``--relion-log``):

  - ``gui`` (default): ``--shrink 0``, what RELION's GUI runs for a LoG job by default: the picker works
    on the micrograph Fourier-cropped to ``2 * round(size * apix / lowpass)`` px (about 380-480 px here),
    which is what makes LoG fast;
  - ``full``: RELION's command-line default (``--shrink 1``): LoG on the micrograph at full size (padded
    to a square of its longer side), as the accuracy comparison runs it;
- Topaz (``topaz preprocess -s S``, S derived from the diameter as in every benchmark, then ``topaz
  extract -m resnet16_u64``, CPU) when ``.venv-topaz`` (or ``--topaz-venv``) exists.

Rows for CUDA are added when ``torch.cuda.is_available()``. Only speed and memory are measured (noise
micrographs have no truth worth scoring). At the end, one line a cell against the speed targets:
``hydrapick pick`` within 2x of LoG's seconds per micrograph, Topaz at least 5x slower.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import harness as h
import numpy as np

TOPAZ = h.TOPAZ_VENV / "bin" / "topaz"

# Detector: (rows, columns, usual pixel size in A) of a motion-corrected, counted micrograph.
DETECTORS = {"K2": (3710, 3838, 1.06), "K3": (4092, 5760, 0.83), "F4": (4096, 4096, 0.93)}
PARTICLES_A = (100.0, 150.0, 300.0)
QUICK_CELLS = ("K3:100", "F4:150", "K2:300")
# relion_autopick --LoG options of each configuration (see the module docstring).
RELION_LOG = {"gui": ("--shrink", "0"), "full": ()}


@functools.cache  # one model load per run, not one per cell
def bundled_particle_px() -> float:
    """The particle diameter, in pixels, at which the bundled model sees particles (48 since stage 11)."""
    from hydrapick.checkpoint import load_model

    return float(load_model()[1]["model_config"]["particle_diameter_px"])


def write_micrographs(folder: Path, shape: tuple[int, int], count: int, pixel_size_A: float,
                      diameter_A: float, seed: int = 0) -> list[Path]:
    """``count`` float32 MRC micrographs of Gaussian noise with dark blobs of the particle's diameter."""
    from hydrapick.io import write_micrograph

    folder.mkdir(parents=True, exist_ok=True)
    d = diameter_A / pixel_size_A
    r = int(d)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    blob = (-1.5 * np.exp(-(xx ** 2 + yy ** 2) / (2 * (d / 4) ** 2))).astype(np.float32)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        path = folder / f"mic_{i:03d}.mrc"
        paths.append(path)
        if path.exists():
            continue
        image = rng.normal(0, 1, size=shape).astype(np.float32)
        n = int(0.25 * shape[0] * shape[1] / d ** 2)  # a quarter-covered monolayer
        for y, x in zip(rng.integers(r, shape[0] - r - 1, n), rng.integers(r, shape[1] - r - 1, n),
                        strict=True):
            image[y - r:y + r + 1, x - r:x + r + 1] += blob
        write_micrograph(path, image, pixel_size_A)
    return paths


INPROCESS = r"""
import json, resource, sys, time
import hydrapick
paths, d, apix, device = json.loads(sys.argv[1])
hydrapick.pick(paths[:1], None, diameter_A=d, pixel_size_A=apix, device=device)  # warm-up
t = time.perf_counter()
hydrapick.pick(paths[1:], sys.argv[2], diameter_A=d, pixel_size_A=apix, device=device)
print(json.dumps({"s_per_mic": (time.perf_counter() - t) / (len(paths) - 1),
                  "peak_MB": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run_cell(detector: str, diameter_A: float, count: int, inprocess_count: int, work: Path,
             devices: list[str], log: list[dict], relion_log: tuple[str, ...] = ("gui",)) -> list[dict]:
    rows_px, cols_px, apix = DETECTORS[detector]
    folder = work / f"{detector}_{rows_px}x{cols_px}_{apix}A_{int(diameter_A)}A"
    paths = write_micrographs(folder / "micrographs", (rows_px, cols_px), count, apix, diameter_A)
    ds = h.Dataset(f"{detector}:{diameter_A:g}", paths, folder / "no-truth", diameter_A, apix)
    scale = bundled_particle_px() / (diameter_A / apix)
    cell = dict(detector=detector, shape=f"{rows_px}x{cols_px}", apix=apix, diameter_A=diameter_A,
                model_px=f"{round(rows_px * scale)}x{round(cols_px * scale)}", count=count)
    rows = []

    def add(picker: str, result: h.Result) -> None:
        rows.append(dict(cell, picker=picker, n=count, wall_s=result.seconds, cpu_s=result.cpu_seconds,
                         peak_MB=result.peak_MB, ok=not result.error))
        if result.error:
            print(f"  {picker}: {result.error}", file=sys.stderr)

    for device in devices:
        add(f"hydrapick pick ({device})",
            h.run_hydrapick(ds, folder, name=f"hydrapick_{device}", device=device))
        k = min(inprocess_count, count) + 1
        inner = [str(p) for p in paths[:k]]
        proc = subprocess.run([sys.executable, "-c", INPROCESS, json.dumps([inner, diameter_A, apix, device]),
                               str(folder / f"inprocess_{device}.star")], cwd=h.ROOT, capture_output=True,
                              text=True)
        if proc.returncode == 0:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(dict(cell, picker=f"hydrapick in-process ({device})", n=k - 1,
                             wall_s=res["s_per_mic"] * (k - 1), cpu_s=float("nan"), peak_MB=res["peak_MB"],
                             ok=True))
        else:
            print(proc.stderr[-2000:], file=sys.stderr)
    for config in relion_log:
        options = RELION_LOG[config]
        add(f"relion LoG {config} {' '.join(options)}".rstrip(),
            h.run_relion_log(ds, folder, name=f"relion_log_{config}", lowpass_A=20.0,
                             adjust_threshold=0.0, extra=list(options), default_run=False))
    if TOPAZ.exists():
        add("topaz preprocess + extract", h.run_topaz(ds, folder, venv=TOPAZ.parents[1]))
    for row in rows:
        log.append(row)
        print_row(row)
    return rows


HEADER = (f"{'detector':8s} {'size':>9s} {'A/px':>5s} {'diam A':>6s} {'model px':>9s}  {'picker':38s} "
          f"{'n':>3s} {'s/mic':>7s} {'cpu s/mic':>9s} {'peak MB':>8s}")


def print_row(r: dict) -> None:
    n = max(1, r["n"])
    flag = "" if r["ok"] else "  FAILED"
    print(f"{r['detector']:8s} {r['shape']:>9s} {r['apix']:5.2f} {r['diameter_A']:6.0f} "
          f"{r['model_px']:>9s}  {r['picker']:38s} {r['n']:3d} {r['wall_s'] / n:7.2f} "
          f"{r['cpu_s'] / n:9.2f} {r['peak_MB']:8.0f}{flag}",
          flush=True)


def per_mic(rows: list[dict], picker: str) -> float:
    """Wall seconds per micrograph of the first row whose picker starts with ``picker`` (nan if none ran)."""
    for r in rows:
        if r["picker"].startswith(picker) and r["ok"]:
            return r["wall_s"] / max(1, r["n"])
    return float("nan")


def print_verdicts(log: list[dict], device: str = "cpu") -> None:
    """One line a cell against the issue's targets: within 2x of RELION LoG, at least 5x faster than Topaz.

    hydrapick is the whole command (``hydrapick pick``), as the other pickers are; the in-process ratio is
    printed beside it. LoG is the first configuration that ran (``gui`` when asked for).
    """
    print(f"\nTargets ({device}): hydrapick pick / LoG <= 2; Topaz / hydrapick pick >= 5")
    print(f"{'cell':8s} {'hp s/mic':>8s} {'in-proc':>7s} {'LoG':>6s} {'hp/LoG':>6s} {'<=2x':>4s} "
          f"{'Topaz':>6s} {'Tz/hp':>6s} {'>=5x':>4s}")
    cells = dict.fromkeys((r["detector"], r["diameter_A"]) for r in log)
    for detector, diameter in cells:
        rows = [r for r in log if (r["detector"], r["diameter_A"]) == (detector, diameter)]
        hp = per_mic(rows, f"hydrapick pick ({device})")
        inproc = per_mic(rows, f"hydrapick in-process ({device})")
        relion = per_mic(rows, "relion LoG")
        topaz = per_mic(rows, "topaz")

        def verdict(ok: bool, *values: float) -> str:
            return "-" if any(v != v for v in values) else ("yes" if ok else "no")

        print(f"{detector + ':' + format(diameter, 'g'):8s} {hp:8.2f} {inproc:7.2f} {relion:6.2f} "
              f"{hp / relion:6.2f} {verdict(hp <= 2 * relion, hp, relion):>4s} {topaz:6.2f} "
              f"{topaz / hp:6.2f} {verdict(topaz >= 5 * hp, hp, topaz):>4s}", flush=True)


def load_average() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def main() -> None:
    global TOPAZ  # the Topaz the cells run, chosen by --topaz-venv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help=f"only the cells {', '.join(QUICK_CELLS)}")
    p.add_argument("--cells", nargs="*", help="cells as DETECTOR:DIAMETER, e.g. K3:100 (default: all 9)")
    p.add_argument("--count", type=int, default=10, help="micrographs per cell for the commands")
    p.add_argument("--inprocess-count", type=int, default=5, help="micrographs timed in-process")
    p.add_argument("--work", type=Path, default=h.CACHE / "speed",
                   help="folder for micrographs and outputs (reused)")
    p.add_argument("--results", type=Path, help="results file (default: benchmarks/results/speed.json for "
                                                "all 9 cells, cache/benchmarks/speed.json otherwise)")
    p.add_argument("--relion-log", nargs="+", choices=sorted(RELION_LOG), default=["gui"],
                   help="RELION LoG configurations to run (default: gui; 'gui full' runs both)")
    p.add_argument("--topaz-venv", type=Path, default=TOPAZ.parents[1],
                   help="the environment of benchmarks/topaz_setup.sh (default: .venv-topaz); Topaz is "
                   "left out, and the first line says so, when it has no bin/topaz")
    args = p.parse_args()
    TOPAZ = args.topaz_venv / "bin" / "topaz"

    import torch

    cells = args.cells or (list(QUICK_CELLS) if args.quick else
                           [f"{d}:{int(a)}" for d in DETECTORS for a in PARTICLES_A])
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    load = load_average()
    print(f"hydrapick speed matrix: torch {torch.__version__}, {os.cpu_count()} CPU(s), "
          f"load average {load:.1f}, devices {', '.join(devices)}; "
          f"RELION LoG: {'yes' if shutil.which('relion_autopick') else 'no'}, "
          f"Topaz: {'yes' if TOPAZ.exists() else 'no'}")
    print(HEADER)
    print("-" * len(HEADER))
    log: list[dict] = []
    for spec in cells:
        detector, diameter = spec.split(":")
        print(f"# {spec}: load average {load_average():.1f} at the start of the cell", flush=True)
        run_cell(detector, float(diameter), args.count, args.inprocess_count, args.work, devices, log,
                 tuple(args.relion_log))
    print(f"# load average {load_average():.1f} at the end")
    print_verdicts(log)
    if "cuda" in devices:
        print_verdicts(log, "cuda")
    args.subset = bool(args.cells or args.quick)
    rows = [dict(r, s_per_mic=round(r["wall_s"] / max(1, r["n"]), 3),
                 cpu_s_per_mic=round(r["cpu_s"] / max(1, r["n"]), 3) if r["cpu_s"] == r["cpu_s"] else None,
                 peak_MB=round(r["peak_MB"])) for r in log]
    print(f"\nresults: {h.write_results(h.results_path('speed', args), 'speed', rows)}")


if __name__ == "__main__":
    main()
