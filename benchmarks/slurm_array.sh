#!/usr/bin/env bash
# A SLURM job array picks one folder in 4 shards into one shared RELION job folder, then a merge run
# (--skip-existing) writes the index, as docs/relion.md says. The union of the shards must equal one plain
# run, with no micrograph twice and no micrograph in two shards.
#
# Usage: benchmarks/slurm_array.sh MICROGRAPH_FOLDER DIAMETER_A [WORKDIR]
#
# Needs a working SLURM (sbatch, squeue): a cluster's, or the one-node cluster of benchmarks/slurm_local.sh
#   eval "$(benchmarks/slurm_local.sh start /tmp/slurm)"; benchmarks/slurm_array.sh ...;
#   benchmarks/slurm_local.sh stop /tmp/slurm
# Environment (sbatch hands this script's environment to the jobs):
#   HYDRAPICK       the command that runs hydrapick (default: hydrapick; e.g. "python3 -m hydrapick" with
#                   PYTHONPATH pointing at a checkout)
#   PYTHON          a Python with starfile, for the check (default: python3)
#   DEVICE          --device of every run (default: cpu)
#   PICK_OPTIONS    more options of every run, e.g. "--model my.pt --head adapted --threshold 0.3"
#   SBATCH_OPTIONS  more sbatch options, e.g. "--partition=gpu --gres=gpu:1"
set -euo pipefail
mics=${1:?micrograph folder}; diameter=${2:?diameter in Angstrom}; work=${3:-slurm_array_check}
hydrapick=${HYDRAPICK:-hydrapick}; python=${PYTHON:-python3}; device=${DEVICE:-cpu}
command -v sbatch >/dev/null || { echo "sbatch not found: no SLURM here"; exit 2; }
# Outputs left by an earlier run would be taken for this run's (the merge run skips them).
if [ -e "$work" ] && [ -n "$(ls -A "$work")" ]; then echo "$work is not empty; give a new WORKDIR"; exit 2; fi
mkdir -p "$work"; work=$(cd "$work" && pwd)
q() { printf '%q' "$1"; }
# One command for the shards, the merge run and the single run; only the output folder differs.
pick="$hydrapick pick $(q "$mics") --diameter $(q "$diameter") --device $(q "$device")"
[ -z "${PICK_OPTIONS:-}" ] || pick+=" $PICK_OPTIONS"
started=$(date +%s)
# Each task picks the shard SLURM_ARRAY_TASK_ID of SLURM_ARRAY_TASK_COUNT into the shared folder, and
# draws its first micrographs with their picks into previews/shard_K (which micrographs it picked).
# shellcheck disable=SC2086  # SBATCH_OPTIONS is a list of options
job=$(sbatch --parsable --array=0-3 --job-name=hydrapick-shards --output="$work/shard_%a.log" \
      ${SBATCH_OPTIONS:-} \
      --wrap "$pick -o $(q "$work/AutoPick/job001") --preview $(q "$work/previews")/shard_\$SLURM_ARRAY_TASK_ID")
job=${job%%;*}
echo "submitted array job $job: $pick -o $work/AutoPick/job001"
while [ -n "$(squeue -h -j "$job" -o %i 2>/dev/null)" ]; do sleep 1; done
echo "array job $job finished after $(( $(date +%s) - started )) s"
# The merge run writes autopick.star and picks nothing (every shard's outputs exist); the single run picks
# everything into another folder. Neither is a shard, even where this script runs inside a job array.
unset SLURM_ARRAY_TASK_ID SLURM_ARRAY_TASK_COUNT SLURM_ARRAY_TASK_MIN SLURM_ARRAY_TASK_MAX \
      SLURM_ARRAY_TASK_STEP SLURM_ARRAY_JOB_ID
# ($pick is shell words, as sbatch --wrap reads them: eval, not word splitting, reads it the same way.)
eval "$pick -o $(q "$work/AutoPick/job001") --skip-existing" > "$work/merge.log" 2>&1 \
    || { cat "$work/merge.log"; exit 1; }
eval "$pick -o $(q "$work/AutoPick/job002") -q"
"$python" - "$work" "$job" <<'PY'
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import starfile

work, job = Path(sys.argv[1]), sys.argv[2]


def names(star):
    table = starfile.read(star, always_dict=True)["coordinate_files"]
    return [str(m) for m in table["rlnMicrographName"]]


def count(log, row):
    """A row of hydrapick's summary table in a log: 'picked', 'skipped (outputs exist)'."""
    found = re.search(rf"^\W*{re.escape(row)}\W+(\d+)", log, re.M)
    return int(found.group(1)) if found else 0


union, single = names(work / "AutoPick/job001/autopick.star"), names(work / "AutoPick/job002/autopick.star")
twice = sorted(m for m, n in Counter(union).items() if n > 1)
logs = [(work / f"shard_{k}.log").read_text() for k in range(4)]
finished = [f"shard {k}/4 done" in log for k, log in enumerate(logs)]
picked = [count(log, "picked") for log in logs]
# The micrographs each shard drew (its first few): no micrograph may be in two shards.
drawn = [{p.stem for p in (work / f"previews/shard_{k}").glob("*.png")} for k in range(4)]
overlap = sorted(m for i, a in enumerate(drawn) for b in drawn[i + 1:] for m in a & b)
merge = (work / "merge.log").read_text()
version = subprocess.run(["sbatch", "--version"], capture_output=True, text=True).stdout.split()[-1]
print(f"SLURM {version}: array job {job} of 4 tasks ({sum(finished)} finished) picked {sum(picked)} "
      f"micrographs ({','.join(map(str, picked))} per shard); merge run picked {count(merge, 'picked')}, "
      f"skipped {count(merge, 'skipped (outputs exist)')}; union {len(union)}, single run {len(single)}; "
      f"twice {len(twice)}; in two shards {len(overlap)}")
ok = (all(finished) and sorted(union) == sorted(single) and not twice and not overlap
      and sum(picked) == len(single) and count(merge, "picked") == 0)
sys.exit(0 if ok else 1)
PY
