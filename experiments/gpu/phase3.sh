#!/usr/bin/env bash
# GPU session, part 3: which training recipe gives the SmolLM2 GLIDE draft the most
# acceptance? One call of at most 9 minutes on one H100/H200, after stage_gguf.sh.
#
# 1. Three variants of the same $LONG-step schedule run side by side on the GPU (each is
#    launch-bound, ~50% busy alone) and stop at step $SHORT (train.stop_at: checkpoint and
#    teacher-forced eval there, learning rate still high, so the ranking compares recipes,
#    not finished drafts):
#      ce      cross-entropy on the true next token (the shipped draft's recipe)
#      kl      KL(target || draft) over the full vocabulary (train.distill_weight=1)
#      kl_gen  kl + $GEN sequences ending with the target's own greedy continuations of
#              random train-split windows (train.selfgen.n), generated first (~30 s)
# 2. Greedy tau of the three checkpoints: tree [4,16,16,16,16] and seq gamma 4 on 4 pycode
#    eval prompts of 2048 tokens, 128 new tokens (experiments/tau_by_text.py, CUDA graphs).
# 3. The variant with the best tree tau continues (resume=true) and exports a float16 draft,
#    which gets the same tau measurement. Its schedule's length is set from the time left
#    (at $SPS_MS ms a step alone, at most $LONG steps): the cosine then still ends at its
#    minimum, and the learning rate at the resume point moves by a few percent at most.
#
# Budget (phase 2 on an H100: 0.105 s/step for CE alone, 1500 steps in 2.6 min; KL adds a
# few full-vocabulary passes: 0.13 s/step assumed): stage 1 ~45 s start and GGUF cache +
# ~150 s for 3 x $SHORT steps and the generation sharing the GPU; stage 2 ~60 s; stage 3
# gets what is left before $BUDGET seconds minus ~75 s for its tau and packing (~1200-1600
# more steps). Should it still run out, the last checkpoint (every 200 steps) is packed
# instead of the exported draft. Wall time stays under $BUDGET (default 510 s) + ~10 s.
#
# Back under $OUT (8 files): phase3.log, tau_short.json, tau_best.json, summary.json,
# draft_{ce,kl,kl_gen}.tar (stage-1 checkpoints) and best_draft.tar (the continued run's
# exported draft, float16: tar -xf best_draft.tar -C longspec/assets/glide-smollm2).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
SHORT=${SHORT:-400} LONG=${LONG:-2000} GEN=${GEN:-2048} BUDGET=${BUDGET:-510} SPS_MS=${SPS_MS:-130}
MODEL=${MODEL:-smollm2} TRAIN=${TRAIN:-default}  # CPU dry run: tiny_llama, cpu_tiny
TAU_ARGS=${TAU_ARGS:-device=cuda samples=4 prompt_tokens=2048 new_tokens=128}
START=$(date +%s)
RUNS=/tmp/p3/runs
mkdir -p $RUNS
LOG=$OUT/phase3.log
log() { echo "[$(($(date +%s) - START))s] $*" | tee -a "$LOG"; }
declare -A EXTRA=(
  [ce]="train.distill_weight=0"
  [kl]="train.distill_weight=1.0"
  [kl_gen]="train.distill_weight=1.0 train.selfgen.n=$GEN"
)
COMMON="model=$MODEL train=$TRAIN train.eval.every=$SHORT \
train.save_every=200 train.eval.tau_prompts=0 train.progress=false"

train_variant() {  # name, seconds allowed, extra overrides; output in /tmp/p3/<name>.log
  local name=$1 secs=$2 d=$RUNS/$1
  shift 2
  timeout "$secs" python3 train.py $COMMON ${EXTRA[$name]} train.work_dir=$d \
    hydra.run.dir=$d train.save_path=$d/final "$@" >>/tmp/p3/$name.log 2>&1
  echo "$name: exit $?" >>/tmp/p3/$name.log
}
tails() { for n in "$@"; do grep -v "it/s\]" /tmp/p3/$n.log | tail -7 >>"$LOG"; done; }
tau() {  # name, seconds allowed, draft dirs; writes $OUT/tau_<name>.json
  local name=$1 secs=$2 dirs
  shift 2
  dirs=$(printf '%s,' "$@")
  timeout "$secs" python3 experiments/tau_by_text.py out=$OUT/tau_$name.json model=$MODEL \
    kinds=[pycode] $TAU_ARGS "drafts=[${dirs%,}]" >/tmp/p3/tau_$name.log 2>&1
  grep -v "it/s\]" /tmp/p3/tau_$name.log | tail -12 >>"$LOG"
}

nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$LOG"
log "stage 1: ce, kl, kl_gen to step $SHORT of $LONG, side by side"
for name in ce kl kl_gen; do
  train_variant $name 280 train.steps=$LONG train.stop_at=$SHORT &
done
wait
tails ce kl kl_gen
for name in ce kl kl_gen; do
  [ -f $RUNS/$name/checkpoint/model.safetensors ] &&
    python3 experiments/gpu/pack_draft.py $RUNS/$name/checkpoint $OUT/draft_$name.tar
done
log "stage 2: tau of the stage-1 checkpoints"
tau short 120 $RUNS/ce/checkpoint $RUNS/kl/checkpoint $RUNS/kl_gen/checkpoint
BEST=$(python3 experiments/gpu/phase3_results.py pick $OUT/tau_short.json) || BEST=kl_gen
LEFT=$((BUDGET - ($(date +%s) - START) - 75))
STEPS=$((SHORT + (LEFT - 30) * 1000 / SPS_MS))
[ $STEPS -gt $LONG ] && STEPS=$LONG
log "stage 3: $BEST continues to step $STEPS (${LEFT}s allowed)"
[ $STEPS -gt $SHORT ] && train_variant $BEST $LEFT train.steps=$STEPS resume=true
tails $BEST
FINAL=$RUNS/$BEST/final
if [ ! -f $FINAL/model.safetensors ]; then
  FINAL=$RUNS/$BEST/checkpoint
  log "no exported draft: packing $FINAL"
fi
python3 experiments/gpu/pack_draft.py $FINAL $OUT/best_draft.tar
log "tau of $FINAL"
tau best 70 $FINAL
python3 experiments/gpu/phase3_results.py summary $OUT/summary.json $RUNS \
  $OUT/tau_short.json $OUT/tau_best.json | tee -a "$LOG"
log "done"
