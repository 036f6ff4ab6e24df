"""The one attention contract every backend implements.

Queries of the tokens in flight attend to two key sets:

* the *prefix*: keys already in a cache buffer, valid per row below ``lengths`` and
  optionally restricted further by ``keep`` (sliding windows, attention sinks);
* the *new* keys of the tokens in flight themselves, under ``new_mask`` (a causal or
  tree mask; ``None`` means causal).

Splitting the two is what makes hybrid tree attention possible (REFERENCE.md section 4):
the prefix needs no per-query mask, only a length per row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor


@dataclass
class Prefix:
    """Keys/values already cached, with the part each row may see."""

    k: Tensor  # (B, Hkv, S, D) buffer; only [:lengths[b]] is valid for row b
    v: Tensor  # (B, Hkv, S, D)
    lengths: Tensor  # (B,) long
    keep: Tensor | None = None  # (B, T or 1, S) bool, ANDed with the length rule
    max_len: int | None = None  # lengths.max() if the caller knows it (saves a device sync)
    # The tokens in flight are already written at slots lengths[b] + i of k/v (the target
    # writes before attending), so a backend may read them from the buffer in one pass.
    in_flight_cached: bool = False

    def used(self) -> int:
        """Number of buffer slots any row can see (max length)."""
        if self.max_len is not None:
            return self.max_len
        return int(self.lengths.max()) if self.lengths.numel() else 0

    def visible(self, n_queries: int, used: int) -> Tensor:
        """(B, T, used) bool: which prefix slots each query row may attend to."""
        slots = torch.arange(used, device=self.lengths.device)  # (used,)
        vis = slots[None, None, :] < self.lengths[:, None, None]  # (B, 1, used)
        if self.keep is not None:
            vis = vis & self.keep[:, :, :used]
        return vis.expand(-1, n_queries, -1)


class AttentionBackend(Protocol):
    """q (B, Hq, T, D) over prefix + new keys -> (B, Hq, T, D) in q's dtype."""

    def __call__(
        self, q: Tensor, prefix: Prefix, k_new: Tensor, v_new: Tensor, new_mask: Tensor | None
    ) -> Tensor: ...


def causal_mask(n: int, device: torch.device) -> Tensor:
    """(n, n) bool lower-triangular mask (query i sees keys <= i)."""
    return torch.ones(n, n, dtype=torch.bool, device=device).tril()


def full_mask(prefix: Prefix, used: int, new_mask: Tensor | None, n_new: int) -> Tensor:
    """(B, 1, T, used + T) bool mask over [prefix slots | new keys]."""
    batch = prefix.lengths.shape[0]
    device = prefix.lengths.device
    tail = causal_mask(n_new, device).expand(batch, -1, -1) if new_mask is None else new_mask
    return torch.cat([prefix.visible(n_new, used), tail], dim=-1)[:, None]  # (B, 1, T, S+T)


def in_flight_mask(prefix: Prefix, end: int, new_mask: Tensor | None, n_new: int) -> Tensor:
    """(B, 1, T, end) bool over buffer slots [0, end) when the T tokens in flight already
    sit at slots lengths[b] + t (``Prefix.in_flight_cached``): a slot below lengths[b]
    by the prefix rule, a slot of the tokens in flight by new_mask (B, T, T) (None:
    causal), any other slot (another row's tokens in flight, stale entries) hidden."""
    device = prefix.lengths.device
    rel = torch.arange(end, device=device)[None, :] - prefix.lengths[:, None]  # (B, end)
    fresh = ((rel >= 0) & (rel < n_new))[:, None, :]  # (B, 1, end)
    if new_mask is None:
        tokens = torch.arange(n_new, device=device)[None, :, None]  # (1, T, 1)
        by_new = fresh & (rel[:, None, :] <= tokens)  # (B, T, end)
    else:
        cols = rel.clamp(0, n_new - 1)[:, None, :].expand(-1, n_new, -1)  # (B, T, end)
        by_new = fresh & new_mask.gather(2, cols)
    return (prefix.visible(n_new, end) | by_new)[:, None]  # (B, 1, T, end)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D) for grouped-query attention."""
    return x if n_rep == 1 else x.repeat_interleave(n_rep, dim=1)
