#!/usr/bin/env bash
# GPU session 12, after stage_gguf.sh with the first GGUF half: the shipped draft's recipe
# (train=default: 3200 steps, 8192 continuations) with its continuations generated through
# the decode fast path (train.selfgen.fast_path=true): does the faster generation train as
# good a draft? Back under $OUT: fastgen.log and the draft's metrics.json.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 LONGSPEC_CACHE=/tmp/lscache
RUN=/tmp/fastgen LOG=$OUT/fastgen.log
nvidia-smi --query-gpu=name --format=csv,noheader | tee "$LOG"
timeout "${LIMIT:-500}" python3 train.py model=smollm2 train=default logger=none \
  train.selfgen.fast_path=true train.selfgen.batch=512 train.eval.every=800 \
  train.save_every=0 train.progress=false train.work_dir=$RUN hydra.run.dir=$RUN \
  train.save_path=$RUN/final 2>&1 | grep -v "it/s\]" >>"$LOG"
echo "train.py exit ${PIPESTATUS[0]}" | tee -a "$LOG"
cp $RUN/final/metrics.json "$OUT/fastgen_metrics.json" 2>/dev/null
grep "self-generated\|data:\|eval @\|decode tau" "$LOG" | cut -c1-330
