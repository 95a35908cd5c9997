#!/usr/bin/env bash
# A SLURM job array picks one folder in 4 shards; the union of the shards must equal one plain run, with
# no micrograph twice. Needs a working SLURM (sbatch, squeue) and hydrapick on the nodes' PATH.
# Usage: benchmarks/slurm_array.sh MICROGRAPH_FOLDER DIAMETER_A [WORKDIR]
set -euo pipefail
mics=${1:?micrograph folder}; diameter=${2:?diameter in Angstrom}; work=${3:-slurm_array_check}
command -v sbatch >/dev/null || { echo "sbatch not found: no SLURM here"; exit 2; }
mkdir -p "$work"
job=$(sbatch --parsable --array=0-3 --output="$work/shard_%a.log" --wrap \
      "hydrapick pick '$mics' --diameter $diameter -o '$work/AutoPick/job001' --device cpu")
echo "submitted array job $job"
while squeue -h -j "$job" | grep -q .; do sleep 5; done
# Merge run: writes the index, picks nothing (every shard's outputs exist).
hydrapick pick "$mics" --diameter "$diameter" -o "$work/AutoPick/job001" --skip-existing --device cpu -q
hydrapick pick "$mics" --diameter "$diameter" -o "$work/AutoPick/job002" --device cpu -q
python3 - "$work" <<'PY'
import sys
from collections import Counter
import starfile
work = sys.argv[1]
a = starfile.read(f"{work}/AutoPick/job001/autopick.star")["rlnMicrographName"].tolist()
b = starfile.read(f"{work}/AutoPick/job002/autopick.star")["rlnMicrographName"].tolist()
twice = [m for m, n in Counter(a).items() if n > 1]
logs = [open(f"{work}/shard_{k}.log").read() for k in range(4)]
print(f"shards: {sum('shard' in log for log in logs)} of 4 logs name their shard; "
      f"union {len(a)} micrographs, single run {len(b)}, twice: {len(twice)}")
sys.exit(0 if sorted(a) == sorted(b) and not twice else 1)
PY
