#!/usr/bin/env bash
# GPU session 10, tenth call (the second GGUF half, right after session10g.sh; before that the sixth, after session10d.sh): graphed
# paths against the plain path, the kernels' GPU tests, then smollm2 end to end (six
# methods, one process, 4k prompts).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 150 python3 experiments/gpu/check_graphs.py smollm2 2>&1 | grep "^|\|Error"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_attention.py tests/test_tree.py \
  -k "cuda or gpu" 2>&1 | tail -2
timeout 300 python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 \
  data.num_samples=2 generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e \
  label="H200 session 10 ${LABEL:-}" "methods=[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]" \
  out="$OUT/e2e.json" 2>&1 | tee "$OUT/e2e.log" | grep "^|\|Error\|error"
