#!/usr/bin/env bash
# GPU session 9, fifth call (wheels and the first GGUF half): stage it, then the
# Qwen2.5-14B shape at 8k/32k with the split kernel's new stages.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 300 python3 -m longspec.bench.scale shape=qwen14b "contexts=[8192,32768]" \
  label="H200 session 9 stages 3 and 2 with the tail unpipelined" out="$OUT/scale_qwen14b.json" \
  hydra.run.dir=/tmp/scale_q14 2>&1 | tee "$OUT/scale_qwen14b.log" | grep "^| \(8192\|32768\)"
