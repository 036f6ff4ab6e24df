#!/usr/bin/env bash
# GPU session 4, after stage_gguf.sh: smollm2 end to end (six methods, one process) with the
# faster kernel and round bookkeeping, the varied-prompt soak with bucketed prefill shapes,
# and tree_shape=auto's device assert located (eager / per-step graphs / whole rounds).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 data.num_samples=2 \
  generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e label="H200 session 4" \
  "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  out="$OUT/e2e.json" 2>&1 | grep "^|\|Error\|error"
timeout 100 python3 experiments/soak.py --model smollm2 --device cuda --samples 150 \
  --out "$OUT/soak_gpu_varied_bucketed.json" 2>&1 | tail -5
for mode in eager steps rounds; do
  CUDA_LAUNCH_BLOCKING=1 timeout 100 python3 experiments/gpu/debug_auto.py $mode 2>&1 \
    | grep -v "^\s*$\|Assertion" | tail -12
done
