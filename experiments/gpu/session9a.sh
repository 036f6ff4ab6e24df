#!/usr/bin/env bash
# GPU session 9, third call (wheels and the first GGUF half): stage it, then the
# Llama-3-8B shape at 8k/32k/128k with the split kernel's new stages (3 for verification,
# 2 for a step, the masked tail unpipelined). Logs under $OUT.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 400 python3 -m longspec.bench.scale shape=llama8b "contexts=[8192,32768,131072]" \
  label="H200 session 9 stages 3 and 2 with the tail unpipelined" out="$OUT/scale_llama8b.json" \
  hydra.run.dir=/tmp/scale_l8 2>&1 | tee "$OUT/scale_llama8b.log" | grep "^| \(8192\|32768\|131072\)"
