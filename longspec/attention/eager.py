"""Plain-math attention: the reference every other backend is tested against."""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.attention.base import Prefix, full_mask, repeat_kv


def masked_attention_lse(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Softmax attention in float32 that also returns the log-sum-exp of each row.

    q (B, Hq, T, D), k/v (B, Hkv, S, D), mask broadcastable to (B, Hq, T, S).
    Returns out (B, Hq, T, D) float32 and lse (B, Hq, T) float32 (-inf where a row sees
    nothing; its output is then 0).
    """
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep).float(), repeat_kv(v, n_rep).float()
    scores = torch.matmul(q.float(), k.transpose(-1, -2)) * q.shape[-1] ** -0.5  # (B,H,T,S)
    scores = scores.masked_fill(~mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # (B, H, T)
    probs = torch.exp(scores - lse[..., None].clamp_min(torch.finfo(torch.float32).min))
    return torch.matmul(probs, v), lse  # (B, H, T, D), (B, H, T)


def eager_attention(
    q: Tensor, prefix: Prefix, k_new: Tensor, v_new: Tensor, new_mask: Tensor | None
) -> Tensor:
    """Reference: one dense masked softmax over [prefix | new] keys."""
    used = prefix.used()
    k = torch.cat([prefix.k[:, :, :used], k_new], dim=2)  # (B, Hkv, S+T, D)
    v = torch.cat([prefix.v[:, :, :used], v_new], dim=2)
    mask = full_mask(prefix, used, new_mask, q.shape[2])  # (B, 1, T, S+T)
    out, _ = masked_attention_lse(q, k, v, mask)
    return out.to(q.dtype)
