#!/usr/bin/env bash
# GPU session 4, second call (after stage_gguf.sh has assembled the GGUF): tau of the
# shipped draft on each kind of local text, the GPU soak with one repeated prompt against
# varied prompts (is the host-memory growth per distinct prompt length?), and
# tree_shape=auto run with synchronous launches to name the op behind its device assert.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 240 python3 experiments/tau_by_text.py out="$OUT/tau_by_text.json" device=cuda \
  samples=4 label="H200" 2>&1 | grep "^|\|skip\|Error\|error" | head -40
for mode in same varied; do
  flag=$([ "$mode" = same ] && echo --same-prompt || true)
  timeout 100 python3 experiments/soak.py --model smollm2 --device cuda --samples 120 $flag \
    --out "$OUT/soak_gpu_$mode.json" 2>&1 | tail -6
done
CUDA_LAUNCH_BLOCKING=1 timeout 150 python3 experiments/auto_shape.py "$OUT/auto_shape.json" \
  device=cuda hydra.run.dir=/tmp/auto 2>&1 | grep -v "^\s*$" | tail -40
