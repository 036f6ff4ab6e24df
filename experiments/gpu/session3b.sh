#!/usr/bin/env bash
# GPU session 3b: split-KV kernel v2 (tokens in flight read from the cache in one pass):
# GPU attention tests, smollm2 end to end with attention=triton, then the at-scale bench.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
python3 -m pytest -q -p no:cacheprovider tests/test_attention.py -k gpu 2>&1 | tail -2
python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 data.num_samples=2 \
  generation.max_new_tokens=256 hydra.run.dir=/tmp/bench_e2e attention=triton \
  label="triton split-KV v2" "methods=${METHODS:-[vanilla,tree,seq,magicdec]}" \
  out="$OUT/e2e_triton_v2.json" 2>&1 | grep "^|\|Error\|error"
REPS="${REPS:-5}" CONTEXTS_14B="${CONTEXTS_14B:-[32768]}" bash experiments/gpu/scale.sh
