#!/usr/bin/env bash
# GPU: the shipped draft's recipe (train=default: KL to the target + its own greedy
# continuations) with a longer schedule and more continuations, in one call of at most
# ~9.5 minutes on an H100/H200, after stage_gguf.sh has assembled the SmolLM2 GGUF.
# The trainer ends with its teacher-forced eval and greedy tau on 4 pycode eval prompts
# (2048 tokens, 128 new, tree [4,16,16,16,16] and seq gamma 4), written to metrics.json.
# Should the time run out, the last checkpoint (every 400 steps) is packed instead.
#
# Back under $OUT: train_long.log and draft.tar (float16 draft + model card + metrics;
# tar -xf draft.tar -C longspec/assets/glide-smollm2 to ship it).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
STEPS=${STEPS:-3200} GEN=${GEN:-4096} LIMIT=${LIMIT:-540} GENBATCH=${GENBATCH:-256} MICRO=${MICRO:-8}
RUN=/tmp/train_long
LOG=$OUT/train_long.log
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$LOG"
echo "train.steps=$STEPS train.selfgen.n=$GEN train.selfgen.batch=$GENBATCH train.micro_batch=$MICRO" | tee -a "$LOG"
timeout "$LIMIT" python3 train.py model=smollm2 train=default train.steps="$STEPS" \
  train.selfgen.n="$GEN" train.selfgen.batch="$GENBATCH" train.micro_batch="$MICRO" train.work_dir=$RUN hydra.run.dir=$RUN train.save_path=$RUN/final \
  train.progress=false train.save_every=400 2>&1 | grep -v "it/s\]" >>"$LOG"
echo "train.py exit ${PIPESTATUS[0]}" | tee -a "$LOG"
FINAL=$RUN/final
[ -f $FINAL/model.safetensors ] || FINAL=$RUN/checkpoint
python3 experiments/gpu/pack_draft.py $FINAL "$OUT/draft.tar" 2>&1 | tail -2 | tee -a "$LOG"
tail -25 "$LOG"
