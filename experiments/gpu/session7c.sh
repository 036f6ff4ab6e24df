#!/usr/bin/env bash
# GPU session 7, third call (a fresh machine, with stage_gguf.sh's first half): every
# GPU test after the CPU changes to sdpa (tokens in flight read from the buffer).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
timeout 400 python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -6
