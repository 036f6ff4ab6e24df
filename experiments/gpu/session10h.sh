#!/usr/bin/env bash
# GPU session 10, last two calls: the first stages the wheels and the first GGUF half
# (bash experiments/gpu/stage_gguf.sh with .whl and .carry/g1); this one, right after with
# .carry/g2, races tree_shape=auto against five fixed shapes after the session's kernel
# changes (smollm2 + the shipped draft, 4 pycode prompts of 2k tokens).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 230 python3 experiments/auto_shape.py "$OUT/auto_shape_2048.json" \
  device=cuda data.prompt_tokens=2048 data.num_samples=4 \
  hydra.run.dir=/tmp/auto_2048 2>&1 | grep "^| tree\|^| vanilla\|race:" | tail -12
