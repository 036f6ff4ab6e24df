#!/usr/bin/env bash
# GPU session 12, first call (wheels and the first GGUF half), after the split-KV kernels
# moved to split_jit.py (merge mode as an enum, the key loop in its own function): session
# 11's first call (GPU tests of verification, tree and attention; SmolLM2 round profile at
# 4k), then the Llama-3-8B shape at 32k.
set -uo pipefail
TAG=${TAG:-session12} bash experiments/gpu/session11a.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 150 python3 -m longspec.bench.scale shape=llama8b "contexts=[32768]" \
  label="H200 session 12" out="$OUT/scale_llama8b_h200_${TAG:-session12}.json" \
  hydra.run.dir=/tmp/scale_llama8b 2>&1 | grep "^|" | head -12
