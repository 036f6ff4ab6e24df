#!/usr/bin/env bash
# GPU session 11, calls run inline (not from their own file), as run:
# sixth call (wheels only, machine warm after session11e.sh): the Qwen2.5-14B shape at
#   128k (session11e.sh's label held a comma, which Hydra refused)
#   -> results/scale_qwen14b_h200_session11_128k.json
# seventh and eighth calls, after the fused embedding + norm of the draft:
#   TAG=session11_embed bash experiments/gpu/session11a.sh   (wheels, first GGUF half)
#   TAG=session11_embed bash experiments/gpu/session11b.sh   (second GGUF half)
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
python3 -m longspec.bench.scale shape=qwen14b "contexts=[131072]" reps=5 \
  label="H200 session 11 128k" out="$OUT/scale_qwen14b_h200_session11_128k.json" \
  hydra.run.dir=/tmp/scale_qwen14b
