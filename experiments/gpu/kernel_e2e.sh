#!/usr/bin/env bash
# GPU session 3: the split-KV Triton kernel. GPU attention tests (float16 <= 2e-3 against
# the dense reference, the triton backend included), then smollm2 end to end on 4k-token
# pycode prompts with attention=sdpa (dense mask) and attention=triton, one process each.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -m pytest -q -p no:cacheprovider tests/test_attention.py -k gpu 2>&1 | tail -3
common=(model=smollm2 data.prompt_tokens=4096 data.num_samples="${SAMPLES:-2}"
  generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e)
python3 -m longspec.bench.e2e "${common[@]}" attention=sdpa "methods=[vanilla,tree]" \
  label="sdpa dense mask" out="$OUT/e2e_sdpa.json" 2>&1 | grep "^|"
python3 -m longspec.bench.e2e "${common[@]}" attention=triton label="triton split-KV" \
  "methods=${METHODS:-[vanilla,tree,seq,magicdec,vanilla_hf,hf_prompt_lookup]}" \
  out="$OUT/e2e_triton.json" 2>&1 | grep "^|\|Error\|error"
