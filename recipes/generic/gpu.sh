#!/usr/bin/env bash
# Generic model on one GPU: simulate the corpus on every core, train (recipes/generic/gpu.toml: bf16
# autocast, batch 64, batches made by worker processes), bundle, and score it zero-shot beside the
# bundled model. Run from anywhere; resumable (the corpus is kept, training continues from its
# checkpoint when RUN already holds one).
#
#     recipes/generic/gpu.sh                 # run folder runs/generic-gpu
#     RUN=runs/gpu2 LIMIT=540 recipes/generic/gpu.sh
#
# LIMIT (seconds, default 600) bounds the training; a run cut off by it is resumed by running the script
# again. SCORE=0 skips the zero-shot scoring. The bundled model (hydrapick/weights/generic.pt) is not replaced: the result is
# RUN/generic.pt, adopted only by the rule in docs/model.md ("Adoption rule").
set -euo pipefail
cd "$(dirname "$0")/../.."
run=${RUN:-runs/generic-gpu}
cores=$(nproc)
workers=${WORKERS:-$(( cores > 3 ? cores - 2 : 1 ))}
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: this recipe needs a GPU')" \
    || [ -n "${ALLOW_CPU:-}" ]
device=${DEVICE:-cuda}
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null || true

start=$SECONDS
recipes/generic/make_corpus.sh cache/generic "$cores"          # the held-out targets (and corpus.toml)
N=20 recipes/generic/make_corpus.sh cache/generic20 "$cores"  # corpus20.toml: what gpu.toml trains on
echo "corpus ready in $(( SECONDS - start )) s"

resume=()
[ -f "$run/checkpoint.pt" ] && resume=(--resume)
start=$SECONDS
set +e
OMP_NUM_THREADS=2 timeout "${LIMIT:-600}" hydrapick train recipes/generic/corpus20.toml \
    --config recipes/generic/gpu.toml --loader-workers "$workers" --device "$device" -q -o "$run" \
    "${resume[@]}" ${TRAIN_ARGS:-}
status=$?
set -e
echo "training: exit $status after $(( SECONDS - start )) s with $workers loader workers"
if [ "$status" -ne 0 ]; then
    [ "$status" -eq 124 ] && echo "cut off at LIMIT=${LIMIT:-600} s: run this script again to resume"
    exit "$status"
fi

python recipes/generic/bundle.py "$run/model.pt" -o "$run/generic.pt" --compute "$(
    nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 || echo "$device") GPU, $cores CPU cores"
[ "${SCORE:-1}" = 0 ] && exit 0
# Zero-shot on every real set and the simulated held-out targets, beside the bundled model.
python benchmarks/compare.py --pickers hydrapick --hydrapick-variant gpu="--model $run/generic.pt" \
    --hydrapick-variant bundled="" --device "$device" --threads "$cores" --out "$run/eval" \
    --results "$run/eval/compare.json"
