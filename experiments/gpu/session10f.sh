#!/usr/bin/env bash
# GPU session 10, seventh call (wheels only): the graphed SmolLM2 round with gemm_rows off
# and on (rows_probe.py rounds), then the Llama-3-8B shape at 8k and 32k after the
# split-length change (min_split_blocks = 6).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
(cd experiments/gpu && timeout 200 python3 rows_probe.py "$OUT/rows_probe_rounds.json" sweep=0 \
  rounds=smollm2:4096 2>&1 | grep "rows=\|Error")
timeout 300 python3 -m longspec.bench.scale shape=llama8b "contexts=[8192,32768]" \
  label="H200 session 10 min_split_blocks 6" out="$OUT/scale_llama8b.json" \
  hydra.run.dir=/tmp/scale_l8 2>&1 | tee "$OUT/scale_llama8b.log" | grep "^| \(8192\|32768\)"
