#!/usr/bin/env bash
# GPU session 11, third call (wheels and the first GGUF half), after the fused absorb, the
# ring-visibility kernel and the level-growing ranking kernel: the GPU tests of those files,
# the SmolLM2 round profile at 4k, the Llama-3-8B shape at 32k and the Qwen2.5-14B shape
# at 128k (its first run there).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_verify.py tests/test_tree.py \
  tests/test_attention.py -k "cuda or gpu" 2>&1 | tail -3
(cd experiments/gpu && timeout 150 python3 profile_round.py \
  "$OUT/profile_rounds_smollm2_4k_h200_${TAG:-session11_fused}.json" smollm2 4096 8192 \
  2>&1 | grep "^graphed\|^eager")
timeout 150 python3 -m longspec.bench.scale shape=llama8b "contexts=[32768]" \
  label="H200 session 11" out="$OUT/scale_llama8b_h200_${TAG:-session11_fused}.json" \
  hydra.run.dir=/tmp/scale_llama8b 2>&1 | grep "^|" | head -12
timeout 200 python3 -m longspec.bench.scale shape=qwen14b "contexts=[131072]" \
  label="H200 session 11, 128k" out="$OUT/scale_qwen14b_h200_session11_128k.json" \
  hydra.run.dir=/tmp/scale_qwen14b 2>&1 | grep "^|" | head -12
