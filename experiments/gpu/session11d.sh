#!/usr/bin/env bash
# GPU session 11, fourth call (right after session11c.sh, with the second GGUF half): the
# second call's checks and end-to-end run again, after the session's later kernel changes.
TAG=session11_fused bash experiments/gpu/session11b.sh
