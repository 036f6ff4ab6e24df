#!/usr/bin/env bash
# GPU session 7, fifth call (fresh machine, wheels only): the split-KV kernel's grid order
# (Launch.rows_first: the row blocks of a key split side by side, so its keys are read
# from HBM once) on its own, then the Llama-3-8B shape (16384-token draft) in both orders.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
timeout 200 python3 experiments/gpu/tune_kernel.py "$OUT/tune_grid.json" grid 2>&1 \
  | grep "^|" | grep -v "smollm2 step"
for order in False True; do
  timeout 150 python3 - "$order" <<PY 2>&1 | grep -v Warning | sed -n '/^| context/,/^$/p' | head -5
import runpy, sys
import longspec.attention.split_kernel as sk
sk.LAUNCH = sk.Launch(rows_first=sys.argv[1] == "True")
sys.argv = ["scale", "shape=llama8b", "contexts=[8192,32768]", "draft_vocab=16384",
            f"label=H200 session 7 rows_first {sys.argv[1]}",
            "out=$OUT/scale_rows_first_" + sys.argv[1] + ".json", "hydra.run.dir=/tmp/s" + sys.argv[1]]
runpy.run_module("longspec.bench.scale", run_name="__main__")
PY
done
