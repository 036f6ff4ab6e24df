#!/usr/bin/env bash
# GPU session 7, first call (with stage_gguf.sh's first half): the Llama-3-8B shape at
# 8k/32k with a draft that scores 16384 or 32768 tokens (draft_vocab), against the
# full-vocabulary draft of scale_llama8b_h200_v5.json.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
for vocab in 16384 32768; do
  timeout 220 python3 -m longspec.bench.scale shape=llama8b "contexts=[8192,32768]" \
    draft_vocab=$vocab label="H200 session 7 draft_vocab $vocab" \
    out="$OUT/scale_llama8b_vocab$vocab.json" hydra.run.dir=/tmp/scale_$vocab 2>&1 \
    | grep -v Warning | tail -22
done
