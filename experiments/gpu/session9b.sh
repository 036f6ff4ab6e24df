#!/usr/bin/env bash
# GPU session 9, fourth call (the second GGUF half, right after session9a.sh): graphed
# paths against the plain path, then smollm2 end to end (six methods, one process, 4k).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 150 python3 experiments/gpu/check_graphs.py smollm2 2>&1 | grep "^|\|Error"
timeout 300 python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 \
  data.num_samples=2 generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e \
  label="H200 session 9" "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  out="$OUT/e2e.json" 2>&1 | tee "$OUT/e2e.log" | grep "^|\|Error\|error"
