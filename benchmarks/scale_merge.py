"""`hydrapick pick --scales` when the diameter typed is off (issue 18, diameter tolerance): AP at 0.8x, 1x
and 1.25x the true diameter, like diameter_tolerance.py.

For a typed diameter D, `hydrapick.pick` runs with ``scales``: each micrograph is picked at r x D for each
factor r and the candidates merged (`hydrapick.picking.scales`; candidates from score 0.05). Each
micrograph is scored with the true diameter's box and edge rule, so only the typed diameter and the
scales change between columns. ``--scales 1`` is plain picking.

    python benchmarks/scale_merge.py --scales 0.89,1,1.12
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import hydrapick
from hydrapick.checkpoint import load_model
from hydrapick.picking.scales import parse_scales

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from diameter_tolerance import FACTORS, SPLITS, true_diameter_report  # noqa: E402
from generic_model import targets  # noqa: E402

DEFAULT_THRESHOLD = float(load_model(None)[1]["thresholds"]["generic"])


def pick_at_scales(target: dict, micrographs: list[Path], typed_A: float, scales: list[float], work: Path,
                   threads: int, tta: bool = False) -> Path:
    """`hydrapick pick --scales` on ``micrographs`` (candidates from score 0.05)."""
    out = work / "merged.star"
    hydrapick.pick([str(m) for m in micrographs], out, diameter_A=typed_A, pixel_size_A=target["apix"],
                   threshold=0.05, border_A=target["diameter_A"] / 2, device="cpu", num_threads=threads,
                   scales=scales, tta=tta)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scales", default="0.89,1,1.12", help="factors of the typed diameter")
    parser.add_argument("--split", choices=sorted(SPLITS), default="trainvalid")
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true", help="also --tta (8 rotations and mirror images)")
    args = parser.parse_args(argv)
    try:
        scales = list(parse_scales(args.scales))
    except ValueError as exc:
        raise SystemExit(f"--scales: {exc}") from None

    print(f"scales {scales}{' with --tta' if args.tta else ''}; AP at "
          f"{', '.join(f'{f:g}x' for f in FACTORS)} the true diameter")
    for t in targets(args.corpus, args.real):
        if t["name"] == "empiar10028":
            micrographs = [p for part in SPLITS[args.split] for p in (t[part] or [])]
        else:
            micrographs = t["test"]
        aps = []
        for f in FACTORS:
            with tempfile.TemporaryDirectory() as w:
                work = Path(w)
                picks = pick_at_scales(t, micrographs, t["diameter_A"] * f, scales, work, args.threads,
                                       args.tta)
                # At 1x, precision and recall at the calibrated threshold too: does it still mean the same
                # with several scales? (AP does not depend on the threshold.)
                report = true_diameter_report(t, micrographs, picks, work,
                                              DEFAULT_THRESHOLD if f == 1 else None)
                aps.append(float(report.ap))
                if f == 1:
                    precision, recall = float(report.precision), float(report.recall)
        print(f"{t['name']:<14}" + "".join(f"{a:8.3f}" for a in aps)
              + f"   worst drop {aps[1] - min(aps):.3f}   at 1x and the default threshold "
              f"{DEFAULT_THRESHOLD:.3f}: P {precision:.3f} R {recall:.3f}", flush=True)


if __name__ == "__main__":
    main()
