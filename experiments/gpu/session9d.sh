#!/usr/bin/env bash
# GPU session 9, sixth call (the second GGUF half, right after the fifth call, SHAPE=qwen14b session9a.sh):
# tree_shape=auto (race laps counting every committed token, margin 3%) against five
# fixed shapes, smollm2 + the shipped draft, 4 pycode prompts of 2k and of 4k tokens.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
for tokens in 2048 4096; do
  timeout 200 python3 experiments/auto_shape.py "$OUT/auto_shape_${tokens}.json" \
    device=cuda data.prompt_tokens=$tokens data.num_samples=4 \
    hydra.run.dir=/tmp/auto_${tokens} 2>&1 | grep "^| tree\|^| vanilla\|race:" | tail -12
done
