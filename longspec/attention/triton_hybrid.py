"""Hybrid tree attention with the split-KV Triton kernel (``attention=triton``, GPU).

The prefix runs through ``split_attention_lse`` straight over the cache buffer with the
per-row lengths (no concatenation, no dense mask, no host sync); a causal block of new
tokens (prefill, a vanilla step) runs through the same kernel, and a tree block through
plain masked math, which is tiny. The two parts merge exactly through their LSE.
"""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.attention.base import Prefix
from longspec.attention.eager import masked_attention_lse
from longspec.attention.hybrid import merge_lse
from longspec.attention.sdpa import sdpa_attention
from longspec.attention.split_kernel import INTERPRET, split_attention_lse

SMALL_BUFFER = 1024  # below this many prefix slots the dense sdpa path is as fast


def _prefix_keep(prefix: Prefix) -> tuple[bool, Tensor | None]:
    """(kernel can take it, keep (B, S) or None); a per-query keep is not supported."""
    if prefix.keep is None:
        return True, None
    if prefix.keep.shape[1] != 1:
        return False, None
    return True, prefix.keep[:, 0].contiguous()  # (B, S)


def _new_part(q: Tensor, k_new: Tensor, v_new: Tensor, new_mask: Tensor | None):
    """Attention of the tokens in flight to each other: (out, lse) float32."""
    if new_mask is None:
        none_cached = torch.zeros(q.shape[0], device=q.device, dtype=torch.long)  # (B,)
        return split_attention_lse(q, k_new, v_new, none_cached, in_flight=True)
    return masked_attention_lse(q, k_new, v_new, new_mask[:, None])  # (B,1,T,T) broadcast


class TritonHybridAttention:
    """q (B, Hq, T, D) over the prefix buffer and the new keys -> (B, Hq, T, D).

    Prefix buffers shorter than ``min_prefix`` slots (the draft's ring), a per-query keep
    mask, or tensors off the GPU take the dense sdpa path instead.
    """

    def __init__(self, min_prefix: int = SMALL_BUFFER):
        self.min_prefix = min_prefix

    def __call__(
        self, q: Tensor, prefix: Prefix, k_new: Tensor, v_new: Tensor, new_mask: Tensor | None
    ) -> Tensor:
        supported, keep = _prefix_keep(prefix)
        on_kernel = q.is_cuda or INTERPRET
        if not supported or not on_kernel or prefix.k.shape[2] < self.min_prefix:
            return sdpa_attention(q, prefix, k_new, v_new, new_mask)
        if prefix.in_flight_cached:  # one pass over cache + tokens in flight, no merge
            return split_attention_lse(
                q, prefix.k, prefix.v, prefix.lengths, keep, True, new_mask, q.dtype
            )[0]
        o_pre, lse_pre = split_attention_lse(q, prefix.k, prefix.v, prefix.lengths, keep)
        if k_new.shape[2] == 0:
            return o_pre.to(q.dtype)
        o_new, lse_new = _new_part(q, k_new, v_new, new_mask)
        return merge_lse(o_pre, lse_pre, o_new, lse_new).to(q.dtype)
