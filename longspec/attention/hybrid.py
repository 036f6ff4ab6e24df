"""Hybrid tree attention (REFERENCE.md section 4).

The prefix part needs no per-query mask, so it runs in a fused kernel that also returns the
log-sum-exp (LSE) of each query row; the small tree part runs with its mask. Two softmaxes
over disjoint key sets merge exactly: with w = sigmoid(lse_prefix - lse_tree),
softmax over the union = w * o_prefix + (1 - w) * o_tree, because
exp(lse_p) / (exp(lse_p) + exp(lse_t)) = sigmoid(lse_p - lse_t).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from longspec.attention.base import Prefix, causal_mask
from longspec.attention.eager import masked_attention_lse

# (q, k, v, mask or None) -> (out float32, lse float32); mask (B, T, S) bool or None = all.
PartKernel = Callable[[Tensor, Tensor, Tensor, Tensor | None], tuple[Tensor, Tensor]]


def merge_lse(o_a: Tensor, lse_a: Tensor, o_b: Tensor, lse_b: Tensor) -> Tensor:
    """Exact merge of two partial attentions over disjoint keys.

    o_* (B, H, T, D), lse_* (B, H, T). A part that sees no key has lse = -inf and weight 0.
    """
    w = torch.sigmoid(lse_a - lse_b)[..., None]  # (B, H, T, 1)
    w = torch.nan_to_num(w, nan=0.0)  # both -inf cannot happen: every query sees itself
    return o_a * w + o_b * (1 - w)


def eager_part(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> tuple[Tensor, Tensor]:
    """Partial attention in plain math (CPU path and reference)."""
    if mask is None:
        mask = torch.ones(q.shape[0], q.shape[2], k.shape[2], dtype=torch.bool, device=q.device)
    return masked_attention_lse(q, k, v, mask[:, None])


class HybridAttention:
    """Prefix through ``prefix_kernel`` (with LSE), tree part with its mask, exact merge."""

    def __init__(
        self, prefix_kernel: PartKernel = eager_part, tree_kernel: PartKernel = eager_part
    ):
        self.prefix_kernel = prefix_kernel
        self.tree_kernel = tree_kernel

    def __call__(
        self, q: Tensor, prefix: Prefix, k_new: Tensor, v_new: Tensor, new_mask: Tensor | None
    ) -> Tensor:
        n_new = q.shape[2]
        if new_mask is None:
            new_mask = causal_mask(n_new, q.device).expand(q.shape[0], -1, -1)  # (B, T, T)
        o_tree, lse_tree = self.tree_kernel(q, k_new, v_new, new_mask)
        used = prefix.used()
        if used == 0:
            return o_tree.to(q.dtype)
        vis = prefix.visible(n_new, used)  # (B, T, S)
        o_pre, lse_pre = self.prefix_kernel(q, prefix.k[:, :, :used], prefix.v[:, :, :used], vis)
        return merge_lse(o_pre, lse_pre, o_tree, lse_tree).to(q.dtype)
