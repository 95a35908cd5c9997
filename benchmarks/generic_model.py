"""Accuracy of a generic model: zero-shot and few-shot, on held-out simulated structures and real data.

Everything goes through the commands a user runs (`hydrapick pick`, `hydrapick finetune`,
`hydrapick evaluate --json`), so the figures are what a user gets. For each target:

* zero-shot: the generic head picks the test micrographs;
* few-shot: `hydrapick finetune` adds a head trained on the target's first micrographs, which then picks
  the same test micrographs.

Targets: the held-out simulated datasets of recipes/generic/targets.txt (made by make_corpus.sh: 10
micrographs each; fine-tune on 0-2, test on 3-9) and ../shared/data/real/empiar-10028 (its meta.json
split: fine-tune on `train`, calibrate on `valid`, test on `test`).

    python benchmarks/generic_model.py                       # the bundled model
    python benchmarks/generic_model.py --model runs/generic/best-pretrain.pt --label single-head
    python benchmarks/generic_model.py --tta --label bundled-tta       # picking with --tta

Prints a table and writes OUT/summary.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
N_FINETUNE = 3


def run(cmd: list[str]) -> float:
    """Run a command, fail loudly, return its wall time in seconds."""
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return time.perf_counter() - t0


def evaluate(truth: Path, picks: Path, diameter_A: float, micrographs: list[Path], out: Path) -> dict:
    """AP, AUROC and best F1 of ``picks`` on ``micrographs`` (box from each micrograph's header)."""
    mic_dir = out.parent / (out.stem + "_mics")
    truth_dir = out.parent / (out.stem + "_truth")
    for d in (mic_dir, truth_dir):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    for m in micrographs:
        (mic_dir / m.name).symlink_to(m.resolve())
        star = truth / (m.stem + ".star")
        (truth_dir / star.name).symlink_to(star.resolve())
    run(["hydrapick", "evaluate", "--truth", str(truth_dir), "--picks", str(picks), "--diameter",
         str(diameter_A), "--micrographs", str(mic_dir), "--json", str(out), "--no-per-micrograph"])
    report = json.loads(out.read_text())
    overall = next(iter(report["pickers"].values()))
    return {k: overall.get(k) for k in ("ap", "auroc", "best_f1", "n_truth", "n_picks")}


def pick(model: str | None, head: str, micrographs: list[Path], diameter_A: float, out: Path,
         apix: float | None, threads: int, tta: bool = False, adapt: bool = False,
         adapt_args: list[str] = ()) -> float:
    cmd = ["hydrapick", "pick", *map(str, micrographs), "--diameter", str(diameter_A), "--head", head,
           "--threshold", "0.05", "--format", "star", "-o", str(out), "--quiet", "--device", "cpu",
           "--threads", str(threads)]
    if model:
        cmd += ["--model", model]
    if apix:
        cmd += ["--apix", str(apix)]
    if tta:
        cmd += ["--tta"]
    if adapt:
        cmd += ["--adapt", *adapt_args]  # label-free adaptation on the micrographs being picked
    return run(cmd)


def finetune(model: str | None, name: str, train: list[Path], coords: Path, diameter_A: float, out: Path,
             apix: float | None, threads: int, valid: list[Path] | None = None,
             extra: list[str] = ()) -> float:
    cmd = ["hydrapick", "finetune", *extra, *map(str, train), "--coordinates", str(coords), "--name", name,
           "--diameter", str(diameter_A), "-o", str(out), "--quiet", "--device", "cpu",
           "--threads", str(threads)]
    if valid:
        for v in valid:
            cmd += ["--valid-micrographs", str(v)]
        cmd += ["--valid-coordinates", str(coords)]
    if model:
        cmd += ["--model", model]
    if apix:
        cmd += ["--apix", str(apix)]
    return run(cmd)


def targets(corpus: Path, real: Path) -> list[dict]:
    """Every target: micrographs to fine-tune on, to calibrate on and to test on, truth and diameter."""
    out = []
    for line in (ROOT / "recipes/generic/targets.txt").read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        name = line.split()[0]
        folder = corpus / name
        if not (folder / "manifest.toml").exists():
            print(f"skipping {name}: {folder} not made (recipes/generic/make_corpus.sh)")
            continue
        manifest = tomllib.loads((folder / "manifest.toml").read_text())
        mics = sorted((folder / "micrographs").glob("*.mrc"))
        out.append(dict(name=name, diameter_A=manifest["simulation"]["structure"]["diameter_A"], apix=None,
                        train=mics[:N_FINETUNE], valid=None, test=mics[N_FINETUNE:],
                        truth=folder / "coordinates"))
    if (real / "meta.json").exists():
        meta = json.loads((real / "meta.json").read_text())
        split = {k: [real / "micrographs" / f"{n}.mrc" for n in v] for k, v in meta["split"].items()}
        out.append(dict(name="empiar10028", diameter_A=meta["diameter_A"], apix=meta["pixel_size_A"],
                        train=split["train"], valid=split["valid"], test=split["test"],
                        truth=real / "truth"))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="checkpoint (default: the bundled generic model)")
    parser.add_argument("--label", default="bundled", help="name of the model in the table")
    parser.add_argument("--corpus", type=Path, default=ROOT / "cache/generic")
    parser.add_argument("--real", type=Path, default=ROOT.parent / "shared/data/real/empiar-10028")
    parser.add_argument("--out", type=Path, default=ROOT / "runs/generic_eval")
    parser.add_argument("--only", help="comma-separated target names")
    parser.add_argument("--no-finetune", action="store_true", help="zero-shot only")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--tta", action="store_true", help="pick with --tta (test-time augmentation)")
    parser.add_argument("--adapt", action="store_true",
                        help="also pick with --adapt (label-free adaptation on the test micrographs)")
    parser.add_argument("--adapt-args", default="", help="extra `hydrapick pick --adapt` options, quoted")
    parser.add_argument("--finetune-args", default="", help="extra `hydrapick finetune` options, quoted")
    parser.add_argument("--no-zero-shot", action="store_true", help="few-shot only")
    args = parser.parse_args(argv)

    out = args.out / args.label
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for t in targets(args.corpus, args.real):
        if args.only and t["name"] not in args.only.split(","):
            continue
        d = out / t["name"]
        d.mkdir(exist_ok=True)
        row = {"target": t["name"], "test_micrographs": len(t["test"])}
        if not args.no_zero_shot:
            seconds = pick(args.model, "generic", t["test"], t["diameter_A"], d / "zero.star", t["apix"],
                           args.threads, args.tta)
            row["zero_shot"] = evaluate(t["truth"], d / "zero.star", t["diameter_A"], t["test"],
                                        d / "zero.json")
            row["zero_shot"]["seconds"] = round(seconds, 1)
        if args.adapt:  # the same micrographs, adapted on without their labels
            seconds = pick(args.model, "generic", t["test"], t["diameter_A"], d / "adapt.star", t["apix"],
                           args.threads, args.tta, adapt=True, adapt_args=shlex.split(args.adapt_args))
            row["adapted"] = evaluate(t["truth"], d / "adapt.star", t["diameter_A"], t["test"],
                                      d / "adapt.json")
            row["adapted"]["seconds"] = round(seconds, 1)
        if not args.no_finetune:
            seconds = finetune(args.model, "target", t["train"], t["truth"], t["diameter_A"], d / "ft.pt",
                               t["apix"], args.threads, t["valid"], shlex.split(args.finetune_args))
            pick(str(d / "ft.pt"), "target", t["test"], t["diameter_A"], d / "few.star", t["apix"],
                 args.threads, args.tta)
            row["few_shot"] = evaluate(t["truth"], d / "few.star", t["diameter_A"], t["test"], d / "few.json")
            row["few_shot"]["finetune_seconds"] = round(seconds, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)

    (out / "summary.json").write_text(json.dumps({"model": args.model or "bundled", "tta": args.tta,
                                                  "finetune_args": args.finetune_args,
                                                  "adapt_args": args.adapt_args, "rows": rows},
                                                 indent=1))
    nan = float("nan")
    print(f"\nmodel: {args.model or 'bundled generic'} ({args.label})")
    print(f"{'target':<14}{'zero AP':>9}{'zero F1':>9}{'adapt AP':>9}{'adapt F1':>9}{'adapt s':>8}"
          f"{'few AP':>9}{'few F1':>9}{'ft s':>8}")
    for r in rows:
        z, a, f = r.get("zero_shot", {}), r.get("adapted", {}), r.get("few_shot", {})
        print(f"{r['target']:<14}{z.get('ap', nan):>9.3f}{z.get('best_f1', nan):>9.3f}"
              f"{a.get('ap', nan):>9.3f}{a.get('best_f1', nan):>9.3f}{a.get('seconds', nan):>8.1f}"
              f"{f.get('ap', nan):>9.3f}{f.get('best_f1', nan):>9.3f}{f.get('finetune_seconds', nan):>8.1f}")
    sims = [r for r in rows if r["target"] != "empiar10028"]
    if sims:
        mean = lambda key: sum(r[key]["ap"] for r in sims) / len(sims) if key in sims[0] else nan  # noqa: E731
        print(f"{'mean (sim)':<14}{mean('zero_shot'):>9.3f}{'':>9}{mean('adapted'):>9.3f}{'':>17}"
              f"{mean('few_shot'):>9.3f}")

if __name__ == "__main__":
    main()
