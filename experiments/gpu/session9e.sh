#!/usr/bin/env bash
# GPU session 9, last call (wheels only): the kernel's GPU tests after the stage change,
# then the Llama-3-8B shape again with the round breakdown timing attention as
# verification runs it (tree keys read from the buffer in one pass).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/test_attention.py tests/test_tree.py \
  -k "cuda or gpu" 2>&1 | tail -3
timeout 300 python3 -m longspec.bench.scale shape=llama8b "contexts=[8192,32768,131072]" \
  label="H200 session 9 with the in-flight attention breakdown" out="$OUT/scale_llama8b.json" \
  hydra.run.dir=/tmp/scale_l8 2>&1 | tee "$OUT/scale_llama8b.log" | grep "^| \(8192\|32768\|131072\)"
