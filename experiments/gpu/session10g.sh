#!/usr/bin/env bash
# GPU session 10, ninth call (wheels and the first GGUF half): after the draft's
# self-attention moved to one split-KV call over [ring | pending], the kernels' GPU tests,
# the SmolLM2 round profile at 4k and the Llama-3-8B shape at 32k.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_attention.py tests/test_tree.py \
  -k "cuda or gpu" 2>&1 | tail -2
(cd experiments/gpu && timeout 200 python3 profile_round.py \
  "$OUT/profile_rounds_smollm2_4k_h200_draft_kernel.json" smollm2 4096 8192 2>&1 \
  | grep "^graphed\|^eager\|sdpa\|Error")
timeout 200 python3 -m longspec.bench.scale shape=llama8b "contexts=[32768]" \
  label="H200 session 10 draft self-attention in the split kernel" \
  out="$OUT/scale_llama8b.json" hydra.run.dir=/tmp/scale_l8 2>&1 | grep "^| 32768\|Error"
