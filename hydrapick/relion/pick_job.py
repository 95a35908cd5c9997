"""``hydrapick-relion-pick``: hydrapick as a RELION 4/5 External job that auto-picks micrographs.

Given ``--in_mics`` (a micrographs STAR file; pixel sizes from its optics block) it picks every micrograph
into the job folder exactly as RELION's own auto-picker lays it out (``autopick.star`` with block
``coordinate_files``, and ``<mirrored path>_autopick.star`` per micrograph with
``_rlnAutopickFigureOfMerit``), names ``autopick.star`` in ``RELION_OUTPUT_NODES.star`` with the coordinate
node label of the project's RELION version, and ends with RELION's exit files (`hydrapick.relion.job`).
It checks ``RELION_JOB_ABORT_NOW`` after every micrograph; run again (RELION's "Continue"), it picks
only the micrographs without outputs (`hydrapick.picking.run.pick` with ``skip_existing``).

Parameters (RELION "Params" tab, ``--LABEL VALUE``): see `PARAMETERS` and docs/relion.md.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from ..io.inputs import gather_inputs
from ..io.relion_pipeline import coordinates_node_label
from .job import JobArgs, JobError, check_abort, console_main, flag

PARAMETERS = {
    "diameter": "particle diameter in Angstrom, roughly (measured between half and twice it; "
                "empty: measured between 50 and 600)",
    "calibrate": "measure the particle scale on a few micrographs first (yes/no, default yes); kept in "
                 "JOBDIR/scale_calibration.json and reused by Continue",
    "threshold": "score cut, 0-1 (default: the head's calibrated threshold)",
    "model": "checkpoint file (default: the bundled generic model)",
    "head": "head of the model (default: generic)",
    "adapt": "label-free adaptation to this data set first (yes/no); kept in JOBDIR/adapted.pt",
    "apix": "pixel size in Angstrom for every micrograph (default: the STAR file's optics group)",
    "min_distance": "minimum distance between picks in Angstrom (default 0.6 x diameter)",
    "border": "drop picks closer than this to the edge, in Angstrom (default: half the diameter)",
    "device": "auto, cpu, cuda or cuda:N (default auto)",
    "batch_size": "micrographs per forward pass",
    "tta": "test-time augmentation (yes/no)",
    "scales": "pick at these multiples of the diameter and merge, e.g. 0.89,1,1.12 (default 1)",
    "relion_version": "4 or 5: node type labels of that version (default: from default_pipeline.star)",
}


def pick_work(args: JobArgs) -> list[tuple[str, str]]:
    """Pick ``--in_mics`` into the job folder; returns the output nodes."""
    from ..picking.run import pick

    mics = args.inputs.get("in_mics")
    if not mics:
        raise JobError("no input micrographs: set 'Input micrographs' (--in_mics) on the Input tab")
    options: dict = {}
    for label, key, convert in (("diameter", "diameter_A", float), ("threshold", "threshold", float),
                                ("model", "model", str), ("head", "head", str),
                                ("apix", "pixel_size_A", float),
                                ("min_distance", "min_distance_A", float), ("border", "border_A", float),
                                ("device", "device", str), ("batch_size", "batch_size", int),
                                ("tta", "tta", flag), ("scales", "scales", str)):
        value = args.take(label, convert)
        if value is not None:
            options[key] = value
    options["calibrate"] = args.take("calibrate", flag, True)
    adapt = args.take("adapt", flag, False)
    relion_version = args.take("relion_version", int)
    args.check_used(list(PARAMETERS))
    if adapt:
        # The adapted model is kept in the job folder, so "Continue" picks the rest with the same head.
        adapted = Path(args.output_name) / "adapted.pt"
        if adapted.exists() and "model" not in options:
            options.update(model=str(adapted), head="adapted")
            print(f"adapt: picking with the head adapted earlier in this job ({adapted})", flush=True)
        else:
            options.update(adapt=True, adapt_output=adapted)
    label = coordinates_node_label(args.project_dir, relion_version)
    # Named exactly as in the STAR file: RELION 4/5 Extract looks the coordinates up by that string.
    items = gather_inputs([mics])
    print(f"picking {len(items)} micrographs from {mics} into {args.output_name}", flush=True)

    def each(event) -> None:
        if event.result is not None:
            r = event.result
            state = f"{len(r.selected)} picks" if r.ok else f"FAILED: {r.error}"
            print(f"  [{event.done}/{event.total}] {r.name}: {state}", flush=True)
        check_abort(args.job_dir)

    report = pick(items, args.job_dir, format="relion", skip_existing=True, num_threads=args.threads,
                  progress=each, **options)
    if report.calibration is not None:
        print(f"particle {report.calibration.summary()}", flush=True)
    for _, reason in report.failures:
        print(f"not picked: {reason}", file=sys.stderr, flush=True)
    if report.n_failed and report.n_failed == report.n_micrographs:
        raise JobError(f"no micrograph could be picked ({report.n_failed} failed; see above)")
    done = report.n_micrographs - report.n_failed
    print(f"{len(report.picks)} picks on {done} micrographs ({report.n_skipped} picked by an earlier run, "
          f"{report.n_failed} failed); threshold {report.threshold:.3g}", flush=True)
    return [(args.node_name("autopick.star"), label)]


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``hydrapick-relion-pick``; returns (and exits with) the job's status."""
    return console_main(argv, pick_work, "hydrapick-relion-pick")


if __name__ == "__main__":
    main()
