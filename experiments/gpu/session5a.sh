#!/usr/bin/env bash
# GPU session 5, first call (with stage_gguf.sh's first half): fast paths against the plain
# path (attention tests, tiny_llama tokens), the one-row gemv step against cuBLAS and the
# split-KV program target, then the at-scale bench (8B at 8k/32k/128k, 14B at 8k/32k).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
bash experiments/gpu/check_fused.sh
timeout 170 python3 experiments/gpu/gemv_probe.py "$OUT/gemv_steps.json" sweep=0 \
  contexts=8192,32768 programs=264,396,512,792 2>&1 | grep -v Warning | tail -14
timeout 330 bash experiments/gpu/scale.sh 2>&1 | grep -v Warning | tail -50
