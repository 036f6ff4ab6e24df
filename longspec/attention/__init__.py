"""Attention backends behind one contract (see ``base.AttentionBackend``)."""

from longspec.attention.base import AttentionBackend, Prefix
from longspec.attention.eager import eager_attention
from longspec.attention.hybrid import HybridAttention
from longspec.attention.sdpa import sdpa_attention

__all__ = ["AttentionBackend", "HybridAttention", "Prefix", "eager_attention", "sdpa_attention"]
