#!/usr/bin/env bash
# GPU session 7, second call (after stage_gguf.sh's second half): tree_shape=auto with the
# race of its finalists against five fixed shapes, smollm2 + the shipped draft, on 2k and
# 4k pycode prompts (one process each).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
for tokens in 2048 4096; do
  timeout 200 python3 experiments/auto_shape.py "$OUT/auto_shape_$tokens.json" device=cuda \
    data.prompt_tokens=$tokens hydra.run.dir=/tmp/auto_$tokens 2>&1 \
    | grep "^|\|^auto\|Error\|race" | tail -16
done
