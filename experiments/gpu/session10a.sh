#!/usr/bin/env bash
# GPU session 10, first call (wheels and the first GGUF half): stage it, then the few-row
# projection kernel (gemm_rows) against cuBLAS per projection (rows_probe.py sweep only).
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
(cd experiments/gpu && timeout 500 python3 rows_probe.py "$OUT/rows_probe_sweep.json" rounds= ${SWEEP_OPTS:-} \
  2>&1 | tee "$OUT/rows_probe_sweep.log" | grep -v Warning)
