#!/usr/bin/env bash
# Simulates the generic model's training corpus (datasets.txt) and the held-out zero-shot targets
# (targets.txt) into OUT (default cache/generic). Each dataset has its own seed (its line number), so the
# corpus is identical on every machine; datasets already made are kept, so the script can be re-run.
# Usage: recipes/generic/make_corpus.sh [OUT] [JOBS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-cache/generic}
jobs=${2:-2}
export STRUCTURES=${STRUCTURES:-$here/../../../shared/data/structures}
N=${N:-10}
SIZE=${SIZE:-768}
mkdir -p "$out"
make_one() {  # name seed options...
  local name=$1 seed=$2; shift 2
  [ -f "$out/$name/manifest.toml" ] && return 0
  rm -rf "$out/$name"
  eval hydrapick simulate -q -n "$N" --size "$SIZE" --diameter-px 28-110 --seed "$seed" -o "$out/$name" "$@"
  echo "made $name"
}
export -f make_one; export out N SIZE
i=0
{ grep -v '^#' "$here/datasets.txt"; grep -v '^#' "$here/targets.txt"; } | while read -r name opts; do
  [ -n "$name" ] || continue
  i=$((i + 1))
  echo "$name $((1000 + i)) $opts"
done | xargs -P "$jobs" -L 1 bash -c 'make_one "$@"' _
