#!/usr/bin/env bash
# GPU session 8, second call (after stage_gguf.sh with the first half): finish staging the
# SmolLM2 GGUF, then train a draft with 8192 self-generated continuations (batches of 512)
# and 3200 steps of 16 sequences in one micro-batch (train_long.sh), ~9.5 minutes.
set -uo pipefail
bash experiments/gpu/stage_gguf.sh
STEPS=3200 GEN=8192 GENBATCH=512 MICRO=16 LIMIT=555 bash experiments/gpu/train_long.sh
