#!/usr/bin/env bash
# GPU session, part 1: GPU tests, then the end-to-end method table for SmolLM2 on 4k-token
# pycode prompts (float16). Writes logs and JSON under $OUT.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee $OUT/gpu.txt
python3 -m pytest -q -m gpu tests/test_attention.py 2>&1 | tail -3 | tee $OUT/gpu_tests.txt
python3 -m longspec.bench.e2e model=smollm2 data.prompt_tokens=4096 data.num_samples=3 \
  generation.max_new_tokens=256 label="${LABEL:-H100 random draft}" out=$OUT/e2e.json \
  hydra.run.dir=/tmp/bench_run "methods=${METHODS:-[vanilla_hf,hf_prompt_lookup,vanilla,seq,tree,magicdec]}" \
  2>&1 | grep -v "it/s\]" | tail -25
