"""Scale and preprocessing tolerance: AP when the diameter typed is off, or the micrographs were rendered
through a common preprocessing, on every real set and the simulated held-out targets.

Scale: each hydrapick variant (``--hydrapick-variant``) with the diameter typed at 0.7x, 0.8x, 1.0x,
1.25x and 1.5x the labelled one and with none, beside the oracle: the best fixed scale, hydrapick picking
at each of 0.6x ... 1.7x (steps of 0.1x) with ``--oracle-flags`` (default ``--no-calibrate`` when this
build has it, so the oracle picks at exactly that scale). RELION's LoG is given the same typed diameters;
Topaz the same, at the ``-s`` a user derives from the typed diameter and at the best ``-s`` (searched at
the labelled diameter). Every run is scored with the labelled diameter's box and edge rule, so only the
typed diameter changes between columns. ``gap`` is the oracle's AP minus the worst typed AP.

Preprocessing (``--renderings``): each set written through the renderings of renderings.py (low-pass,
binning, Wiener, NLM + CLAHE, local contrast, guided filter, JPEG, Topaz-Denoise) and every picker run at
the labelled diameter.

    python benchmarks/tolerance.py                               # scale, every set and picker (hours)
    python benchmarks/tolerance.py --sets empiar-10028 --micrographs 2 --simulated none --pickers hydrapick
    python benchmarks/tolerance.py --hydrapick-variant default="" --hydrapick-variant nocal="--no-calibrate"
    python benchmarks/tolerance.py --no-scale --renderings all --pickers hydrapick,relion-log
"""

from __future__ import annotations

import argparse
import shlex
import sys

import harness as h
import numpy as np
from renderings import RENDERINGS, render

VARIANTS = {"hydrapick": ""}
TYPED = (0.7, 0.8, 1.0, 1.25, 1.5, None)
ORACLE = tuple(round(f, 2) for f in np.arange(0.6, 1.701, 0.1))


def label(factor: float | None) -> str:
    return "none" if factor is None else f"{factor:g}x"


SCALE_COLUMNS = [("set", "set", ""), ("picker", "picker", ""),
                 *[(label(f), label(f), ".3f") for f in TYPED],
                 ("oracle", "oracle", ".3f"), ("oracle_at", "at", ".1f"), ("gap", "gap", ".3f")]
RENDERING_COLUMNS = [("set", "set", ""), ("rendering", "rendering", ""), ("picker", "picker", ""),
                     ("ap", "AP", ".3f"), ("best_f1", "best F1", ".3f"), ("error", "note", "")]


def oracle(ds: h.Dataset, args: argparse.Namespace) -> tuple[float | None, float | None, dict]:
    """The best fixed scale: (AP, factor, AP at every factor)."""
    flags = (shlex.split(args.oracle_flags) if args.oracle_flags is not None
             else ["--no-calibrate"] if h.hydrapick_accepts("--no-calibrate") else [])
    curve = {}
    for f in args.oracle_factors:
        r = h.run_hydrapick(ds, work(args) / ds.name / "oracle", name=f"oracle_{f:g}", diameter_factor=f,
                            extra=flags, device=args.device, threads=args.threads)
        report = h.score(r, ds)
        curve[f"{f:g}"] = None if report is None else float(report.ap)
    scored = {f: ap for f, ap in curve.items() if ap is not None}
    if not scored:
        return None, None, curve
    at = max(scored, key=scored.get)
    return scored[at], float(at), curve


def scale_rows(ds: h.Dataset, args: argparse.Namespace) -> list[dict]:
    """One row per picker: AP at every typed diameter, beside the oracle."""
    out = work(args) / ds.name
    best_ap, best_at, curve = oracle(ds, args)
    print(f"  {ds.name} oracle: AP {best_ap} at {best_at}x; {curve}", flush=True)
    runs: dict[str, dict[float | None, h.Result]] = {}
    if "hydrapick" in args.pickers:
        for name, flags in h.hydrapick_variants(args, VARIANTS).items():
            runs[name] = {f: h.run_hydrapick(ds, out / name, name=label(f), diameter_factor=f, extra=flags,
                                             device=args.device, threads=args.threads) for f in TYPED}
    typed = [f for f in TYPED if f is not None]
    if "relion-log" in args.pickers:
        runs["relion-log"] = {f: h.run_relion_log(ds, out / "relion-log", name=label(f), diameter_factor=f,
                                                  invert=args.relion_invert) for f in typed}
    if "topaz" in args.pickers:
        done: dict[tuple[int, float], h.Result] = {}  # (-s, typed): one run serves both rows

        def topaz(scale: int, f: float) -> h.Result:
            if (scale, f) not in done:
                done[scale, f] = h.run_topaz(ds, out / "topaz", scale=scale, diameter_factor=f, name=label(f),
                                             venv=args.topaz_venv)
            return done[scale, f]

        runs["topaz (user -s)"] = {f: topaz(h.topaz_user_scale(ds.diameter_px * f), f) for f in typed}
        search = [topaz(s, 1.0) for s in h.topaz_scales(args)]
        for r in search:
            h.score(r, ds)
        found = h.best(search)
        if found is not None:
            runs["topaz (best -s)"] = {f: topaz(found.settings["topaz_s"], f) for f in typed}
    rows = []
    for picker, by_factor in runs.items():
        row = {"set": ds.name, "picker": picker}
        notes = []
        for f, r in by_factor.items():
            h.score(r, ds)
            row[label(f)] = r.row()["ap"]
            row[f"{label(f)} s/mic"] = r.row()["s_per_mic"]
            if "topaz_s" in r.settings:
                row[f"{label(f)} topaz_s"] = r.settings["topaz_s"]
            if r.error:
                notes.append(f"{label(f)}: {r.error}")
        aps = [row[label(f)] for f in typed if row.get(label(f)) is not None]
        row.update(oracle=best_ap, oracle_at=best_at, oracle_curve=curve,
                   gap=best_ap - min(aps) if aps and best_ap is not None else None, notes=notes or None)
        rows.append(row)
        print(h.table([row], SCALE_COLUMNS).splitlines()[-1], flush=True)
    return rows


def rendering_rows(ds: h.Dataset, args: argparse.Namespace) -> list[dict]:
    """AP of every picker on each rendering of one set, at the labelled diameter."""
    rows = []
    for rendering in args.renderings:
        folder = work(args) / ds.name / "renderings" / rendering.name
        try:
            rds = render(ds, rendering, folder, args.topaz_venv)
        except RuntimeError as exc:
            rows.append({"set": ds.name, "rendering": rendering.name, "picker": "-", "error": str(exc)})
            continue
        results = []
        if "hydrapick" in args.pickers:
            results += [h.run_hydrapick(rds, folder, name=name, extra=flags, device=args.device,
                                        threads=args.threads)
                        for name, flags in h.hydrapick_variants(args, VARIANTS).items()]
        if "relion-log" in args.pickers:
            results.append(h.run_relion_log(rds, folder, invert=args.relion_invert, default_run=False))
        if "topaz" in args.pickers:
            results.append(h.run_topaz(rds, folder, venv=args.topaz_venv))
        for r in results:
            h.score(r, rds)
            rows.append({**r.row(), "set": ds.name, "rendering": rendering.name})
            print(h.table(rows[-1:], RENDERING_COLUMNS).splitlines()[-1], flush=True)
    return rows


def work(args: argparse.Namespace):
    return args.out or h.CACHE / "tolerance"


def main(argv: list[str] | None = None) -> int:
    parser = h.accuracy_parser(__doc__, VARIANTS)
    parser.add_argument("--oracle-flags", help="extra `hydrapick pick` flags of the oracle's runs (default: "
                                               "--no-calibrate when this build has it)")
    parser.add_argument("--oracle-factors", default=",".join(f"{f:g}" for f in ORACLE),
                        help="the fixed scales the oracle searches (default: 0.6 to 1.7 in steps of 0.1)")
    parser.add_argument("--no-scale", action="store_true", help="skip the scale part")
    parser.add_argument("--renderings", default="",
                        help="comma-separated renderings, or 'all': "
                             + ", ".join(r.name for r in RENDERINGS) + " (default: none)")
    args = h.parse(parser, argv)
    args.oracle_factors = [float(f) for f in args.oracle_factors.split(",")]
    known = {r.name: r for r in RENDERINGS}
    names = list(known) if args.renderings == "all" else [r for r in args.renderings.split(",") if r]
    if set(names) - set(known):
        raise SystemExit(f"--renderings: unknown {sorted(set(names) - set(known))}; choose from "
                         f"{', '.join(known)}")
    args.renderings = [known[n] for n in names]
    args.subset = args.no_scale or bool(args.oracle_flags)  # not the standard run: results go to cache/

    scale, rendered, path = [], [], h.results_path("tolerance", args)
    for ds in h.datasets(args):
        print(ds.describe(), flush=True)
        if not args.no_scale:
            scale += scale_rows(ds, args)
        rendered += rendering_rows(ds, args)
        h.write_results(path, "tolerance", scale + rendered, complete=False)  # what a stopped run keeps
    if scale:
        print("\nAP by the diameter typed (x the labelled one), beside the best fixed scale\n"
              + h.table(scale, SCALE_COLUMNS))
    if rendered:
        print("\nAP by rendering, at the labelled diameter\n" + h.table(rendered, RENDERING_COLUMNS))
    h.write_results(path, "tolerance", scale + rendered, complete=True)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
