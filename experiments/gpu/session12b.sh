#!/usr/bin/env bash
# GPU session 12, second call (right after session12a.sh, with the second GGUF half):
# graphed == eager for every method, then SmolLM2 end to end on 4k pycode prompts, all six
# methods in one process.
TAG=${TAG:-session12} LABEL=${LABEL:-H200 session 12} bash experiments/gpu/session11b.sh
