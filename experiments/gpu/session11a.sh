#!/usr/bin/env bash
# GPU session 11, first call (wheels and the first GGUF half): stage it, then the GPU tests
# of the new greedy-acceptance kernels (and the other CUDA-only tests of those files) and
# the SmolLM2 round profile at 4k (kernel counts per phase, graphed timings).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_verify.py tests/test_tree.py \
  tests/test_attention.py -k "cuda or gpu" 2>&1 | tail -3
cd experiments/gpu
timeout 200 python3 profile_round.py "$OUT/profile_rounds_smollm2_4k_h200_${TAG:-session11}.json" \
  smollm2 4096 8192 2>&1 | grep "^graphed\|^eager"
