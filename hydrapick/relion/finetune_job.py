"""``hydrapick-relion-finetune``: a RELION 4/5 External job that trains a head from manual picks.

Given ``--in_mics`` (micrographs STAR) and ``--in_coords`` (a Manual picking job's ``manualpick.star``, or
any ``coordinate_files`` index or coordinate STAR file), it fine-tunes a new head on the micrographs that
have picks (`hydrapick.training.finetune.finetune`) and writes the checkpoint to ``<job>/model.pt``; a
hydrapick-relion-pick job then picks with ``--model External/jobNNN/model.pt --head NAME``. The job's
output node is that checkpoint; the end-of-job protocol is `hydrapick.relion.job`'s.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..io.inputs import gather_inputs
from ..picks import micrograph_key
from .job import JobArgs, JobError, check_abort, console_main, flag

MODEL_FILE = "model.pt"
# RELION has no node type for a picker's model; this follows its scheme (cf. Topaz's
# "ParamsData.sav.topaz.model" in RELION's src/pipeline_jobs.h), so RELION lists it without using it.
MODEL_NODE_LABEL = "ParamsData.pt.hydrapick.model"
PARAMETERS = {
    "diameter": "particle diameter in Angstrom (required)",
    "name": "name of the new head (default: finetuned)",
    "model": "base checkpoint (default: the bundled generic model)",
    "apix": "pixel size in Angstrom (default: the STAR file's optics group)",
    "steps": "optimiser steps", "lr": "learning rate", "seed": "random seed",
    "flips": "also train on rotated and mirrored copies (yes/no)",
    "sparse": "only some particles of each micrograph are picked, the others are unknown, not "
              "background (yes/no; default no)",
    "expected_particles": "particles per micrograph, picked or not (implies sparse=yes; default: "
                          "estimated with the generic model)",
    "train_body_blocks": "the new head's own copy of the body's last N blocks, trained with it (default 1; "
                         "0: the head alone)",
    "device": "auto, cpu, cuda or cuda:N (default auto)",
}


def finetune_work(args: JobArgs) -> list[tuple[str, str]]:
    """Fine-tune a head on ``--in_mics`` + ``--in_coords``; returns the output nodes."""
    from ..config import FinetuneConfig, from_dict
    from ..io import read_coordinates
    from ..training.finetune import finetune

    mics, coords = args.inputs.get("in_mics"), args.inputs.get("in_coords")
    if not mics or not coords:
        raise JobError("set both 'Input micrographs' (--in_mics) and 'Input coordinates' (--in_coords, e.g. "
                       "ManualPick/job004/manualpick.star) on the Input tab")
    diameter_A = args.take("diameter", float)
    if diameter_A is None:
        raise JobError("set the particle diameter: a parameter with label 'diameter' and a value in Angstrom")
    name = args.take("name", str, "finetuned")
    base = args.take("model", str)
    pixel_size_A = args.take("apix", float)
    device = args.take("device", str, "auto")
    given = (("steps", args.take("steps", int)), ("lr", args.take("lr", float)),
             ("seed", args.take("seed", int)), ("train_body_blocks", args.take("train_body_blocks", int)))
    overrides = {k: v for k, v in given if v is not None}
    if args.take("flips", flag, False):
        overrides["flips"] = True
    # Manual picking jobs usually hold some particles of each micrograph, not all: say so with sparse=yes.
    if args.take("sparse", flag, False):
        overrides["sparse"] = True
    expected = args.take("expected_particles", float)
    if expected is not None:
        overrides["expected_particles"] = expected
    args.check_used(list(PARAMETERS))
    config = from_dict(FinetuneConfig, overrides, where="External job parameters")
    # Only micrographs with picks train: an unpicked micrograph is not one without particles.
    picked = {micrograph_key(m) for m in read_coordinates(coords, "star").micrographs()}
    items = [it for it in gather_inputs([mics]) if micrograph_key(it.name) in picked]
    if not items:
        raise JobError(f"none of the micrographs in {mics} has picks in {coords}")
    sizes = {it.pixel_size_A for it in items}
    if pixel_size_A is None and len(sizes) == 1:
        pixel_size_A = sizes.pop()
    print(f"fine-tuning head '{name}' on {len(items)} micrographs with picks from {coords}", flush=True)

    def progress(event) -> None:
        check_abort(args.job_dir)

    out = args.job_dir / MODEL_FILE
    result = finetune(base, name, [it.path for it in items], [coords], diameter_A, pixel_size_A=pixel_size_A,
                      coordinate_format="star", config=config, device=device, threads=args.threads,
                      output=out, progress=progress, command="hydrapick-relion-finetune")
    print(f"head '{name}' written to {out}: threshold {result.threshold:.3f}; pick with the parameters "
          f"model={args.node_name(MODEL_FILE)} head={name}", flush=True)
    return [(args.node_name(MODEL_FILE), MODEL_NODE_LABEL)]


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``hydrapick-relion-finetune``; returns (and exits with) the job's status."""
    return console_main(argv, finetune_work, "hydrapick-relion-finetune")


if __name__ == "__main__":
    main()
