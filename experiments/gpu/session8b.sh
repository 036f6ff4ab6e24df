#!/usr/bin/env bash
# GPU session 8, fourth call (after stage_gguf.sh's second half): tree_shape=auto with the
# race margin (decode.auto.race_margin) against five fixed shapes, smollm2 + the retrained
# draft, 4 pycode prompts of 2k and of 4k tokens, twice each (one process per run).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
for run in a b; do
  for tokens in 2048 4096; do
    timeout 140 python3 experiments/auto_shape.py "$OUT/auto_shape_${tokens}_$run.json" \
      device=cuda data.prompt_tokens=$tokens data.num_samples=4 \
      hydra.run.dir=/tmp/auto_${tokens}_$run 2>&1 | grep "^| tree\|race:" | tail -12
  done
done
