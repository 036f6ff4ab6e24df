#!/usr/bin/env bash
# GPU session 12, second call (after stage_gguf.sh with the first GGUF half): does training
# on longer sequences raise tau on ~2k-token prompts? The shipped draft (trained on
# 1024-token sequences) is fine-tuned (train.init_from) on 2048-token sequences, with the
# target's continuations of 1792-token windows, then the shipped and the fine-tuned draft
# are compared in one process on 16 pycode eval prompts and 8 prose prompts (2048 tokens,
# 128 new; tree [4,16,16,16,16], seq gamma 4).
# Back under $OUT: finetune.log, the draft (finetuned/), tau_finetune_*.json.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
RUN=/tmp/finetune LOG=$OUT/finetune.log
STEPS=${STEPS:-1200} GEN=${GEN:-2048}
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$LOG"
timeout 380 python3 train.py model=smollm2 train=default logger=none \
  train.init_from=longspec/assets/glide-smollm2 train.seq_len=2048 train.batch_size=8 \
  train.micro_batch=8 train.steps="$STEPS" train.lr=3e-4 train.warmup_steps=50 \
  train.selfgen.n="$GEN" train.selfgen.prompt_tokens=1792 train.selfgen.batch=256 \
  train.eval.every=300 train.eval.sequences=16 train.save_every=0 train.progress=false \
  train.work_dir=$RUN hydra.run.dir=$RUN train.save_path="$OUT/finetuned" \
  2>&1 | grep -v "it/s\]" >>"$LOG"
echo "train.py exit ${PIPESTATUS[0]}" | tee -a "$LOG"
grep "eval @\|decode tau\|final:" "$LOG" | cut -c1-400
[ -f "$OUT/finetuned/model.safetensors" ] || exit 1
timeout 150 python3 experiments/tau_by_text.py out="$OUT/tau_finetune_smollm2_h200_session12.json" \
  device=cuda samples=16 "kinds=[pycode]" "drafts=[longspec/assets/glide-smollm2,$OUT/finetuned]" \
  label="H200 session 12: shipped vs fine-tuned at 2048" 2>&1 | grep "^|\|rror"
