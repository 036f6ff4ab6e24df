#!/usr/bin/env bash
# GPU session 10, second call (the second GGUF half): stage it, then the graphed vanilla
# step, tree round, verification and draft levels with gemm_rows off and on (rows_probe.py).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
(cd experiments/gpu && timeout 520 python3 rows_probe.py "$OUT/rows_probe_rounds.json" sweep=0 \
  "rounds=${ROUNDS:-smollm2:4096,llama8b:32768}" 2>&1 | tee "$OUT/rows_probe_rounds.log" \
  | grep -v Warning)
