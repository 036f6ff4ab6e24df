#!/usr/bin/env bash
# GPU session 6, first call (with stage_gguf.sh's first half): where a smollm2-shaped round
# goes and the split-KV program target (random weights, 4k), then the Llama-3-8B shape at
# 8k/32k (scale bench) after the two-stage top-k of the draft levels.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 150 python3 experiments/gpu/profile_round.py "$OUT/profile_smollm2.json" smollm2 4096 \
  8192 32,64,128,256,512 2>&1 | grep -v "Warning\|warn_once" | head -60
CONTEXTS_8B="[8192,32768]" CONTEXTS_14B="[]" timeout 300 bash experiments/gpu/scale.sh 2>&1 \
  | grep -v Warning | tail -30
