#!/usr/bin/env bash
# GPU session 6, third call: the beam-level Triton kernels (CUDA test against the CPU
# ranking) and the smollm2-shaped round profile after them.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_tree.py -k cuda 2>&1 | tail -3
timeout 150 python3 experiments/gpu/profile_round.py "$OUT/profile_smollm2.json" smollm2 4096 \
  8192 2>&1 | grep -v "Warning\|warn_once" | head -24
