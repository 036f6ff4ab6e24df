#!/usr/bin/env bash
# GPU session 10, fifth call (wheels and the first GGUF half): stage it, then every
# split-KV call at each Launch.min_split_blocks (tune_kernel.py splits) and the SmolLM2
# round profile at 4k with the new default (6 blocks).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cd experiments/gpu
timeout 120 python3 tune_kernel.py "$OUT/tune_kernel_h200_splits.json" splits 2>&1 | grep "^|" \
  | sed 's/Launch(.*min_split_blocks=\([0-9]*\).*)/min_split_blocks \1/'
timeout 200 python3 profile_round.py "$OUT/profile_rounds_smollm2_4k_h200_splits.json" \
  smollm2 4096 8192 2>&1 | grep "^graphed\|^eager"
