#!/usr/bin/env bash
# GPU session 11, fourth call (right after session11c.sh, with the second GGUF half):
# graphed == eager for every method, then SmolLM2 end to end on 4k pycode prompts, all six
# methods in one process.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 150 python3 experiments/gpu/check_graphs.py smollm2 2>&1 | tail -6
timeout 400 python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 \
  data.num_samples=2 generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e \
  "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  label="${LABEL:-H200 session 11}" out="$OUT/e2e_smollm2_h200_${TAG:-session11_fused}.json" \
  2>&1 | grep "^|\|Error\|error"
