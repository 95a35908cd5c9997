#!/usr/bin/env bash
# Micrographs per second from disk on one GPU, in under 5 minutes (run from the repository root):
#
#     benchmarks/gpu_pick.sh            # 400 Falcon 4-sized micrographs (4096 x 4096, 0.93 A/px, 150 A)
#     COUNT=1000 SIZE=4096 benchmarks/gpu_pick.sh
#
# Writes DISTINCT float32 MRC micrographs to cache/streaming (reused), hard-links them under COUNT names,
# and picks them all with one `hydrapick.pick` call on cuda (benchmarks/streaming_memory.py): reader
# threads read, upload and resample on their own CUDA streams while the network works. Prints the
# throughput per block of micrographs and the process's memory. Files just written are in the page cache:
# for cold reads, drop the caches first (as root: sync; echo 3 > /proc/sys/vm/drop_caches).
set -euo pipefail
cd "$(dirname "$0")/.."
python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to measure')"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true
exec timeout 290 python benchmarks/streaming_memory.py --device cuda --count "${COUNT:-400}" \
    --size "${SIZE:-4096}" --apix "${APIX:-0.93}" --diameter "${DIAMETER:-150}" --distinct "${DISTINCT:-20}"
