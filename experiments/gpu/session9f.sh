#!/usr/bin/env bash
# GPU session 9, last two calls (wheels only), as run by hand: the Llama-3-8B shape once more
# after one layer's attention came to be timed over a graph of 10 calls
# (scale_llama8b_h200_session9_breakdown.json), then the 8B round profile at 32k
# (profile_rounds_llama8b_32k_h200_session9.json).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 300 python3 -m longspec.bench.scale shape=llama8b "contexts=[8192,32768,131072]" \
  label="H200 session 9 attention timed over 10 calls a graph" \
  out="$OUT/scale_llama8b.json" hydra.run.dir=/tmp/scale_l8 2>&1 | grep "^| [0-9]"
(cd experiments/gpu && timeout 240 python3 profile_round.py \
  "$OUT/profile_rounds_llama8b_32k_h200_session9.json" llama8b 32768 none 2>&1 | tail -40)
