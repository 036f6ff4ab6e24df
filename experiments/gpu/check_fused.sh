#!/usr/bin/env bash
# GPU check of the fast paths: attention tests (float16 vs the dense reference) and the
# graphed + fused-layer target against the eager plain path on tiny_llama (greedy tokens).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
python3 -m pytest -q -p no:cacheprovider tests/test_attention.py -k gpu 2>&1 | tail -1
python3 experiments/gpu/check_graphs.py tiny_llama 2>&1 | grep "^|\|Error"
