#!/usr/bin/env bash
# GPU session 10, third call (wheels only): the split-KV kernel on SmolLM2-shaped calls at
# each row-block size and program target (tune_kernel.py small), the graphed SmolLM2 round
# with gemm_rows off and on (rows_probe.py), and the SmolLM2 round profile at 4k with the
# program target swept (profile_round.py).
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cd experiments/gpu
timeout 150 python3 tune_kernel.py "$OUT/tune_kernel_h200_small.json" small 2>&1 | grep "^|"
timeout 200 python3 rows_probe.py "$OUT/rows_probe_rounds.json" sweep=0 rounds=smollm2:4096 \
  2>&1 | grep "rows="
timeout 200 python3 profile_round.py "$OUT/profile_rounds_smollm2_4k_h200_session10.json" \
  smollm2 4096 8192 96,192,384,512 2>&1 | grep -v Warning | head -60
