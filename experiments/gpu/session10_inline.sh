#!/usr/bin/env bash
# GPU session 10, the calls run inline (not from a session10*.sh file), as run:
# second call (wheels only): the few-row kernel's small-block launches, SmolLM2 shapes
#   -> results/rows_probe_h200_sweep2.json
# fourth call (wheels only): every split-KV call at each program target of many-row blocks,
#   through a Launch.block_programs field that was replaced by min_split_blocks before the
#   commit -> results/tune_kernel_h200_programs.json (not reproducible from this tree)
# eighth call: torch's sdpa backends on the draft's self-attention call
#   -> results/sdpa_probe_h200.json
set -uo pipefail
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
cd experiments/gpu
timeout 500 python3 rows_probe.py "$OUT/rows_probe_sweep2.json" rounds= launches=small \
  shapes=smollm2 2>&1 | grep -v Warning | tail -20
timeout 200 python3 sdpa_probe.py "$OUT/sdpa_probe_h200.json" 2>&1 | grep "^|"
