#!/usr/bin/env bash
# GPU: at-scale timings with random weights (nothing to download). Llama-3-8B shape at
# 8k/32k/128k, then a Qwen2.5-14B shape at 8k/32k, float16, one process each: vanilla step
# vs its memory floor, tree round, verification, tree attention per backend, draft memory.
# Tables on stdout, JSON under $OUT. About 3-5 minutes on an H100/H200.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -m longspec.bench.scale shape=llama8b "contexts=${CONTEXTS_8B:-[8192,32768,131072]}" \
  reps="${REPS:-10}" label="${LABEL:-}" out="$OUT/scale_llama8b.json" \
  hydra.run.dir=/tmp/scale_llama8b 2>&1 | tail -60
python3 -m longspec.bench.scale shape=qwen14b "contexts=${CONTEXTS_14B:-[8192,32768]}" \
  reps="${REPS:-10}" label="${LABEL:-}" out="$OUT/scale_qwen14b.json" \
  hydra.run.dir=/tmp/scale_qwen14b 2>&1 | tail -60
