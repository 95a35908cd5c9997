"""Turn a trained run into the bundled generic model: hydrapick/weights/generic.pt.

Keeps the body and the generic head (the simulated datasets' own heads are of no use to anyone picking
real data, and would make the file 30x larger), the generic head's calibrated threshold, and records the
provenance: recipe files, corpus, run log summary, git commit. Stored in float16 (loaded as float32).

    python recipes/generic/bundle.py runs/generic2/model.pt --earlier runs/generic/model.pt

``--earlier`` names the model.pt of each earlier stage the run was initialised from (``train --init``),
so that the provenance counts the compute of every stage; ``--earlier-bundle`` takes the stages recorded
in a bundled model the run continued (stage 4 from the shipped stages 1-3:
``python recipes/generic/bundle.py runs/generic4/model.pt --earlier-bundle hydrapick/weights/generic.pt``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
from pathlib import Path

from hydrapick.checkpoint import load_checkpoint, save_checkpoint
from hydrapick.model import GENERIC_HEAD, HydraPicker

ROOT = Path(__file__).resolve().parents[2]
RECIPE = Path(__file__).resolve().parent
OUTPUT = ROOT / "hydrapick" / "weights" / "generic.pt"
CPU_COMPUTE = "2-core AMD EPYC CPU (bf16 autocast), no GPU"


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _stage(run_model: Path) -> dict:
    """Compute and identity of one training run (its model.pt and the log.jsonl beside it)."""
    log = run_model.parent / "log.jsonl"
    epochs = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {"run": run_model.parent.name, "run_model_sha256": _sha256(run_model),
            "epochs_logged": len(epochs),
            "training_seconds": round(sum(e.get("time_s") or 0 for e in epochs), 1)}


def bundle(run_model: Path, output: Path = OUTPUT, earlier: list[Path] | None = None,
           compute: str = CPU_COMPUTE, earlier_bundle: Path | None = None) -> Path:
    model, meta = load_checkpoint(run_model)
    generic = HydraPicker(model.config)
    generic.body.load_state_dict(model.body.state_dict())
    generic.heads[GENERIC_HEAD].load_state_dict(model.heads[GENERIC_HEAD].state_dict())

    # Stages recorded in an earlier bundle (their run folders need not exist any more), then those named.
    before = (load_checkpoint(earlier_bundle)[1].get("provenance") or {}).get("stages", []) \
        if earlier_bundle is not None else []
    stages = list(before) + [_stage(p) for p in (earlier or [])] + [_stage(run_model)]
    training = dict(meta.get("training") or {})
    provenance = {
        "recipe": "recipes/generic (make_corpus.sh, datasets.txt, corpus.toml, corpus20.toml; stages "
                  "train.toml ... randomise16.toml or gpu.toml, each with --init from the one before: "
                  "recipes/generic/HISTORY.md)",
        "recipe_sha256": {p.name: _sha256(p) for p in sorted(RECIPE.glob("*")) if p.is_file()},
        "git_commit_of_bundling": _git_commit(),
        "run_model_sha256": _sha256(run_model),
        "training_data": "34 simulated source datasets (hydrapick simulate); held out: 4hhb, 6b7n, 6msm "
                         "and all real data (EMPIAR-10028 never seen)",
        "dataset_heads_dropped": list(model.head_names),
        "stages": stages,
        "epochs_logged": sum(st["epochs_logged"] for st in stages),
        "training_seconds": round(sum(st["training_seconds"] for st in stages), 1),
        "compute": compute,
    }
    metadata = {
        "thresholds": {GENERIC_HEAD: (meta.get("thresholds") or {}).get(GENERIC_HEAD, 0.5)},
        "diameters_A": {GENERIC_HEAD: None},
        "training": training,
        "provenance": provenance,
        "seed": meta.get("seed"),
        "command": meta.get("command"),
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    return save_checkpoint(output, generic, metadata, half=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_model", type=Path, help="model.pt of a `hydrapick train` run")
    parser.add_argument("-o", "--output", type=Path, default=OUTPUT)
    parser.add_argument("--earlier", type=Path, action="append", default=[],
                        help="model.pt of an earlier stage this run was initialised from (repeatable)")
    parser.add_argument("--earlier-bundle", type=Path,
                        help="a bundled model this run continued: its recorded stages come first")
    parser.add_argument("--compute", default=CPU_COMPUTE, help="what the run trained on, for the provenance")
    args = parser.parse_args()
    path = bundle(args.run_model, args.output, args.earlier, args.compute, args.earlier_bundle)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
