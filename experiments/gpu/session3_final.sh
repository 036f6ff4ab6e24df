#!/usr/bin/env bash
# GPU session 3, last call: the shipped kl_gen draft through the fused + split-KV fast
# path. smollm2 end to end on 4k-token pycode prompts (all six methods, one process),
# the GPU soak (200 samples), the 8B at-scale bench, then tree_shape=auto vs fixed shapes.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 data.num_samples=2 \
  generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e label="H200 final" \
  "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  out="$OUT/e2e_final.json" 2>&1 | grep "^|\|Error\|error"
timeout 150 python3 experiments/soak.py --model smollm2 --device cuda --samples 200 \
  --out "$OUT/soak_gpu.json" 2>&1 | tail -8
REPS=5 CONTEXTS_14B="[32768]" timeout 150 bash experiments/gpu/scale.sh 2>&1 | grep -v "^wrote" | head -40
timeout 150 python3 experiments/auto_shape.py "$OUT/auto_shape.json" device=cuda \
  hydra.run.dir=/tmp/auto 2>&1 | grep "^|\|auto\|Error" | tail -14
