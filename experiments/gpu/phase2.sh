#!/usr/bin/env bash
# GPU session, part 2: train the SmolLM2 GLIDE draft, then the end-to-end method table with
# it (4k-token pycode prompts, float16). The draft and the results come back under $OUT.
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
python3 train.py model=smollm2 train=default train.steps="${STEPS:-1500}" train.progress=false \
  train.eval.tau_prompts=2 train.work_dir=/tmp/train train.save_path="$OUT/glide-smollm2" \
  hydra.run.dir=/tmp/train 2>&1 | grep -v "it/s\]" | tail -40 > "$OUT/train_tail.txt"
tail -6 "$OUT/train_tail.txt"
python3 -m longspec.bench.e2e model=smollm2 model.draft.path="$OUT/glide-smollm2" \
  model.draft.package=null data.prompt_tokens=4096 data.num_samples=3 \
  generation.max_new_tokens=256 label="H100 trained draft" out="$OUT/e2e_trained.json" \
  hydra.run.dir=/tmp/bench2 "methods=${METHODS:-[vanilla_hf,hf_prompt_lookup,vanilla,seq,tree,magicdec]}" \
  2>&1 | grep -v "it/s\]" | tail -12
