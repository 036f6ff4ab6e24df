"""``attention=auto``: the best backend this machine can run."""

from __future__ import annotations

import importlib.util

import torch

from longspec.attention.base import AttentionBackend
from longspec.attention.sdpa import sdpa_attention


def auto_backend() -> AttentionBackend:
    """With a GPU and Triton: hybrid attention through the split-KV kernel (it falls back
    to sdpa for short buffers and CPU tensors). Otherwise sdpa with one dense mask."""
    if torch.cuda.is_available() and importlib.util.find_spec("triton") is not None:
        from longspec.attention.triton_hybrid import TritonHybridAttention

        return TritonHybridAttention()
    return sdpa_attention
