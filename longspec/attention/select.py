"""``attention=auto``: the best backend this machine can run."""

from __future__ import annotations

from longspec.attention.base import AttentionBackend
from longspec.attention.sdpa import sdpa_attention


def auto_backend() -> AttentionBackend:
    """sdpa: torch's fused kernels with one dense mask (CPU and GPU)."""
    return sdpa_attention
