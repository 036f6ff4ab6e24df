#!/usr/bin/env bash
# GPU session 11, fifth call (wheels only): the CUDA tests (bfloat16 kernels among them),
# the accept/ranking probe, and the Qwen2.5-14B shape at 128k with its error shown.
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/test_verify.py tests/test_tree.py \
  tests/test_attention.py -k "cuda or gpu" 2>&1 | tail -15
(cd experiments/gpu && timeout 120 python3 accept_probe.py "$OUT/accept_probe_h200.json" 2>&1 \
  | grep "^|")
timeout 240 python3 -m longspec.bench.scale shape=qwen14b "contexts=[131072]" reps=5 \
  label="H200 session 11, 128k" out="$OUT/scale_qwen14b_h200_session11_128k.json" \
  hydra.run.dir=/tmp/scale_qwen14b 2>&1 | grep -v Warning | tail -25
