"""AP and the calibration criterion against the particle scale, per set: the picture behind calibration.

For each set, hydrapick's bundled model picks every micrograph in-process at each factor of the labelled
diameter on a log ladder (0.5-2.0x, 8 steps per doubling; the engine of ``pick --no-calibrate``), and each
pass is scored with the labelled diameter's box and edge rule (`harness.score`'s rule). Beside it, the
criterion `hydrapick.picking.calibrate` maximises, on the same micrographs it would use, at the same
factors; then what calibration chooses from a diameter typed at 0.7-1.5x and with none, and the AP there.

    python benchmarks/scale_curves.py --plot docs/images/scale_calibration.png     # every set (about 1 h)
    python benchmarks/scale_curves.py --sets empiar-10028 --simulated none --micrographs 3
"""

from __future__ import annotations

import argparse
import math

import harness as h
import numpy as np

from hydrapick.checkpoint import load_model
from hydrapick.evaluation import evaluate
from hydrapick.io.inputs import MicrographInput
from hydrapick.picking import pick_micrographs
from hydrapick.picking.calibrate import _Rungs, _spread, calibrate_scale
from hydrapick.picks import Picks

FACTORS = tuple(round(2 ** (k / 8), 4) for k in range(-8, 9))
TYPED = (0.7, 0.8, 1.0, 1.25, 1.5, None)
COLUMNS = [("set", "set", ""), ("oracle", "oracle", ".3f"), ("oracle_at", "at", ".2f"),
           ("ap_1x", "AP 1x", ".3f"),
           *[(f"chosen_{t or 'none'}", f"{t or 'none'}: x", ".2f") for t in TYPED],
           *[(f"ap_{t or 'none'}", f"{t or 'none'}: AP", ".3f") for t in TYPED]]


def curves(ds: h.Dataset, net_meta, threads: int | None) -> dict:
    """AP and criterion at every factor of the labelled diameter, and the calibrations from each typed."""
    items = [MicrographInput(path=str(p), name=p.name, pixel_size_A=ds.pixel_size_A) for p in ds.micrographs]
    ap = {}
    for f in FACTORS:
        parts = [r.picks for r in pick_micrographs(items, model=net_meta, diameter_A=ds.diameter_A * f,
                                                    border_A=0.0, threshold=0.5, device="cpu",
                                                    num_threads=threads) if r.ok]
        picks = ds.in_region(Picks.concat(parts))
        ap[f] = float(evaluate(ds.truth, picks, ds.diameter_px, micrographs=ds.keys).ap)
    # The criterion exactly as calibration computes it, on the micrographs it would use.
    loaded = []
    for item in _spread(items, 3):
        from hydrapick.io import read_micrograph

        mic = read_micrograph(item.path, pixel_size_A=ds.pixel_size_A)
        loaded.append((item, np.array(mic.data, dtype=np.float32), ds.pixel_size_A))
    import torch

    rungs = _Rungs(net_meta[0], net_meta[1], "generic", torch.device("cpu"), loaded, True)
    criterion = {f: rungs(ds.diameter_A * f) for f in FACTORS}
    row = {"set": ds.name, "ap": {f"{f:g}": v for f, v in ap.items()},
           "criterion": {f"{f:g}": v for f, v in criterion.items()}}
    inside = {f: v for f, v in ap.items() if 0.59 <= f <= 1.7}
    row["oracle_at"], row["oracle"] = max(inside.items(), key=lambda kv: kv[1])
    row["ap_1x"] = ap[1.0]
    for t in TYPED:
        chosen = calibrate_scale(items, model=net_meta, diameter_A=None if t is None else ds.diameter_A * t,
                                 num_threads=threads)
        factor = chosen.diameter_A / ds.diameter_A
        row[f"chosen_{t or 'none'}"] = factor
        # AP at the chosen factor: the nearest factor of the ladder above (exact picks are tolerance.py's).
        nearest = min(FACTORS, key=lambda f: abs(math.log(f / factor)))
        row[f"ap_{t or 'none'}"] = ap[nearest]
    return row


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    ncols = min(3, len(rows))
    nrows = -(-len(rows) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(rows):]:
        ax.set_visible(False)
    for ax, row in zip(axes.flat, rows, strict=False):
        f = [float(k) for k in row["ap"]]
        ax.plot(f, list(row["ap"].values()), "o-", color="tab:blue", label="AP")
        crit = np.array(list(row["criterion"].values()))
        ax.plot(f, crit / max(crit.max(), 1e-9), "s--", color="tab:orange", label="criterion (scaled)")
        ax.axvline(row["oracle_at"], color="tab:blue", lw=0.8, ls=":")
        ax.axvline(row["chosen_none"], color="tab:orange", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xticks([0.5, 0.7, 1, 1.4, 2])
        ax.set_xticklabels(["0.5", "0.7", "1", "1.4", "2"])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 1.02)
        ax.set_title(row["set"], fontsize=9)
        ax.set_xlabel("diameter / labelled diameter", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="lower center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    h.add_dataset_options(parser)
    parser.set_defaults(pickers="hydrapick")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core)")
    parser.add_argument("--plot", help="write the figure here (PNG)")
    args = h.parse(parser, argv)
    net_meta = load_model(None)
    rows = []
    path = h.results_path("scale_curves", args)
    for ds in h.datasets(args):
        print(ds.describe(), flush=True)
        rows.append(curves(ds, net_meta, args.threads))
        print(h.table(rows[-1:], COLUMNS), flush=True)
        h.write_results(path, "scale_curves", rows)
    print(h.table(rows, COLUMNS))
    if args.plot:
        plot(rows, args.plot)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
