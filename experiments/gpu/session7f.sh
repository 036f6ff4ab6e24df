#!/usr/bin/env bash
# GPU session 7, sixth call (fresh machine, wheels only): the chunked beam kernels (vocab
# wider than 16384) against torch's ranking, then the Llama-3-8B shape with the
# full-vocabulary draft (its levels now rank in chunks) and with a 32768-token draft.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/test_tree.py -k cuda 2>&1 | tail -3
for vocab in null 32768; do
  timeout 200 python3 -m longspec.bench.scale shape=llama8b "contexts=[8192,32768]" \
    draft_vocab=$vocab label="H200 session 7 chunked beam kernels draft_vocab $vocab" \
    out="$OUT/scale_llama8b_chunked_$vocab.json" hydra.run.dir=/tmp/scale_c$vocab 2>&1 \
    | grep "^| \(8192\|32768\)" | head -4
done
