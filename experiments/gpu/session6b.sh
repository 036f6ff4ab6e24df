#!/usr/bin/env bash
# GPU session 6, second call (after stage_gguf.sh's second half): smollm2 with the retrained
# draft: graphed paths against the eager plain path, end to end (six methods, one process,
# 4k prompts), tree_shape=auto against fixed shapes, tau by kind of text.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 100 python3 experiments/gpu/check_graphs.py smollm2 2>&1 | grep "^|\|Error"
timeout 200 python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 \
  data.num_samples=2 generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e \
  label="H200 session 6" "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  out="$OUT/e2e.json" 2>&1 | grep "^|\|Error\|error"
timeout 130 python3 experiments/auto_shape.py "$OUT/auto_shape.json" device=cuda \
  hydra.run.dir=/tmp/auto 2>&1 | grep "^|\|^auto\|Error" | tail -14
timeout 120 python3 experiments/tau_by_text.py out="$OUT/tau_by_text.json" device=cuda \
  samples=4 label="H200 session 6" 2>&1 | grep "^|\|skip\|Error\|error" | head -30
