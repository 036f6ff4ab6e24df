#!/usr/bin/env bash
# GPU session 4, last call (after stage_gguf.sh): fast paths against the plain path (fused
# draft included), smollm2 end to end (six methods), tree_shape=auto against five fixed
# shapes now that graph keys name their strategy.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
bash experiments/gpu/check_fused.sh
timeout 120 python3 experiments/gpu/check_graphs.py smollm2 2>&1 | grep "^|\|Error"
python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 data.num_samples=2 \
  generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e label="H200 session 4 final" \
  "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  out="$OUT/e2e.json" 2>&1 | grep "^|\|Error\|error"
timeout 200 python3 experiments/auto_shape.py "$OUT/auto_shape.json" device=cuda \
  hydra.run.dir=/tmp/auto 2>&1 | grep "^|\|^auto\|Error" | tail -14
