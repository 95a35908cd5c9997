"""Accuracy comparison: hydrapick beside RELION's LoG picker and pretrained Topaz on every real set and the
simulated held-out targets, in one run.

Per set and picker: AP and best F1 over every candidate, precision and recall at the picker's default
threshold, and wall seconds per micrograph (start-up, model loading and preprocessing included). Each
picker is told the labelled diameter. Topaz runs at every ``--topaz-scales`` downsampling; its rows are
the ``-s`` a user derives from the diameter and the best one (chosen on the same micrographs: an upper
bound for Topaz). Ends with each picker's mean over the sets.

    python benchmarks/compare.py                                  # everything (hours on 2 CPU cores)
    python benchmarks/compare.py --sets empiar-10028 --micrographs 2 --simulated none   # smoke run
    python benchmarks/compare.py --hydrapick-variant hydrapick="" --hydrapick-variant nocal="--no-calibrate"
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

import harness as h
import numpy as np

VARIANTS = {"hydrapick": "", "hydrapick --adapt": "--adapt"}
COLUMNS = [("set", "set", ""), ("picker", "picker", ""), ("topaz_s", "-s", "d"), ("ap", "AP", ".3f"),
           ("best_f1", "best F1", ".3f"), ("precision", "P", ".3f"), ("recall", "R", ".3f"),
           ("s_per_mic", "s/mic", ".2f"), ("error", "note", "")]


def compare(ds: h.Dataset, args: argparse.Namespace) -> list[h.Result]:
    """Every picker of ``--pickers`` on one set, scored; Topaz as its user-derived and its best -s rows."""
    out = (args.out or h.CACHE / "compare") / ds.name
    results = []
    if "hydrapick" in args.pickers:
        for name, flags in h.hydrapick_variants(args, VARIANTS).items():
            results.append(h.run_hydrapick(ds, out, name=name.replace(" ", ""), extra=flags,
                                           device=args.device, threads=args.threads))
            results[-1].picker = name
    if "relion-log" in args.pickers:
        results.append(h.run_relion_log(ds, out, invert=args.relion_invert))
    for r in results:
        h.score(r, ds)
    if "topaz" in args.pickers:
        user = h.topaz_user_scale(ds.diameter_px)
        search = [h.run_topaz(ds, out, scale=s, venv=args.topaz_venv)
                  for s in sorted({*h.topaz_scales(args), user})]
        for r in search:
            h.score(r, ds)
            print(f"  {ds.name} topaz -s {r.settings['topaz_s']}: AP "
                  f"{r.report.ap if r.report else float('nan'):.3f} {r.error}", flush=True)
        found = h.best(search) or search[0]
        chosen = next(r for r in search if r.settings["topaz_s"] == user)
        chosen.picker = "topaz (user -s)"
        results.append(chosen)
        if found is not chosen:
            found.picker = "topaz (best -s)"
            results.append(found)
        found.settings["topaz_search"] = {str(r.settings["topaz_s"]): r.row()["ap"] for r in search}
    return results


def means(rows: list[dict]) -> list[dict]:
    """Each picker's mean AP, best F1, precision and recall over the sets where it was scored on all."""
    by_picker = defaultdict(list)
    for r in rows:
        by_picker[r["picker"]].append(r)
    n_sets = len({r["set"] for r in rows})
    out = []
    for picker, rs in by_picker.items():
        scored = [r for r in rs if r["ap"] is not None]
        mean = {k: (float(np.mean([r[k] for r in scored if r[k] is not None])) if len(scored) == n_sets
                    else None) for k in ("ap", "best_f1", "precision", "recall", "s_per_mic")}
        out.append({"set": f"mean ({n_sets})", "picker": picker, **mean})
    return out


def main(argv: list[str] | None = None) -> int:
    parser = h.accuracy_parser(__doc__, VARIANTS)
    parser.add_argument("--jobs", type=int, default=1, help="sets run side by side (default: 1; timings are "
                                                           "then shared-machine figures)")
    args = h.parse(parser, argv)

    rows, path = [], h.results_path("compare", args)
    scoring = "box = labelled diameter, IoU > 0.6, truth and picks >= half a diameter from the edge"
    sets = h.datasets(args)
    with ProcessPoolExecutor(args.jobs) as pool:
        for ds, results in zip(sets, pool.map(compare, sets, [args] * len(sets)), strict=True):
            print(ds.describe(), flush=True)
            rows += [r.row() for r in results]
            print(h.table(rows[-len(results):], COLUMNS), flush=True)
            h.write_results(path, "compare", rows, scoring=scoring, complete=False)  # kept if stopped
    rows += means(rows)
    print("\n" + h.table(rows, COLUMNS))
    h.write_results(path, "compare", rows, scoring=scoring, complete=True)
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
