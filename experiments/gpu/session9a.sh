#!/usr/bin/env bash
# GPU session 9, third and fifth calls (wheels and the first GGUF half): stage it, then a
# scale run with the split kernel's new stages (3 for verification, 2 for a step, the
# masked tail unpipelined). Third call: the defaults (Llama-3-8B shape at 8k/32k/128k);
# fifth: SHAPE=qwen14b CONTEXTS=[8192,32768]. Logs under $OUT.
set -uo pipefail
SHAPE=${SHAPE:-llama8b}
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 400 python3 -m longspec.bench.scale shape=$SHAPE "contexts=${CONTEXTS:-[8192,32768,131072]}" \
  label="H200 session 9 stages 3 and 2 with the tail unpipelined" out="$OUT/scale_$SHAPE.json" \
  hydra.run.dir=/tmp/scale_$SHAPE 2>&1 | tee "$OUT/scale_$SHAPE.log" | grep "^| [0-9]"
