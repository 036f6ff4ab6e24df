"""LongSpec training positions and masks (REFERENCE.md section 5).

* Anchor-offset positions: the first ``s`` tokens (``s`` uniform in 0..max_anchors) keep
  positions 0..s-1 (attention-sink anchors), the rest are shifted by a random offset so a
  short training sequence sees the large positions of long-context inference.
* Self-attention: a query at position p sees the draft keys of earlier tokens whose
  position lies in (p - window, p], exactly the inference rule (ring + pending).
* Cross-attention lag: token i sees the target's last-layer KV of tokens 0..i - lag[i], as
  at inference where a draft query d steps ahead of the committed prefix has lag d.

Everything here is index/position bookkeeping on small integer tensors; the masks are
dense booleans for ``scaled_dot_product_attention`` (training sequences are short).
"""

from __future__ import annotations

import torch
from torch import Tensor


def anchor_offset_positions(
    batch: int,
    seq_len: int,
    max_anchors: int,
    max_offset: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) long positions: i for i < s_b, i + offset_b otherwise.

    s_b is uniform in 0..max_anchors and offset_b uniform in 0..max_offset, per row, so
    the largest position is at most seq_len - 1 + max_offset.
    """
    if max_anchors < 0 or max_offset < 0:
        raise ValueError("max_anchors and max_offset must be >= 0")
    anchors = torch.randint(0, max_anchors + 1, (batch, 1), generator=generator)  # (B, 1)
    offsets = torch.randint(0, max_offset + 1, (batch, 1), generator=generator)  # (B, 1)
    idx = torch.arange(seq_len)[None, :]  # (1, T)
    return torch.where(idx < anchors, idx, idx + offsets)


def sample_lags(
    batch: int,
    seq_len: int,
    lag_min: int,
    lag_max: int,
    per_token: bool,
    generator: torch.Generator | None = None,
) -> Tensor:
    """(B, T) long cross-attention lags, uniform in lag_min..lag_max (per token or per row)."""
    if not 1 <= lag_min <= lag_max:
        raise ValueError(f"need 1 <= lag_min <= lag_max, got {lag_min}, {lag_max}")
    shape = (batch, seq_len) if per_token else (batch, 1)
    lags = torch.randint(lag_min, lag_max + 1, shape, generator=generator)
    return lags.expand(batch, seq_len)


def self_mask(positions: Tensor, window: int) -> Tensor:
    """(B, T, T) bool: key j visible to query i iff j <= i and pos_j > pos_i - window."""
    n = positions.shape[1]
    idx = torch.arange(n, device=positions.device)
    causal = idx[None, :] <= idx[:, None]  # (T, T)
    near = positions[:, None, :] > positions[:, :, None] - window  # (B, T, T)
    return causal[None] & near


def cross_mask(lags: Tensor) -> tuple[Tensor, Tensor]:
    """Mask (B, T, T) over target KV slots and valid (B, T) for lags (B, T).

    Query i sees target slots j <= i - lag[i]. A query with nothing to see (i < lag, which
    never happens at inference) is pointed at slot 0 to keep the softmax finite and is
    reported invalid, so it is left out of the loss.
    """
    n = lags.shape[1]
    idx = torch.arange(n, device=lags.device)
    last = idx[None, :] - lags  # (B, T) last visible slot
    valid = last >= 0
    last = last.clamp(min=0)
    mask = idx[None, None, :] <= last[:, :, None]  # (B, T, T)
    return mask, valid
