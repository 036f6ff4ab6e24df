"""torch scaled_dot_product_attention over [prefix | new] with one dense mask."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from longspec.attention.base import Prefix, full_mask, in_flight_mask


def sdpa_attention(
    q: Tensor, prefix: Prefix, k_new: Tensor, v_new: Tensor, new_mask: Tensor | None
) -> Tensor:
    """Dense masked attention through torch's fused kernels (plain tree attention).

    When the tokens in flight are already in the buffer (``Prefix.in_flight_cached``) it
    attends over a view of the buffer, with no copy of the cached keys (measured on the
    2-core CPU, SmolLM2 at 2k: the two concatenations cost ~9 ms of a ~90 ms step).
    """
    used, n_new = prefix.used(), q.shape[2]
    if used == 0 and new_mask is None:
        # Prefill with nothing cached: a plain causal kernel, no mask tensor at all.
        return F.scaled_dot_product_attention(q, k_new, v_new, is_causal=True, enable_gqa=True)
    if prefix.in_flight_cached:
        end = min(used + n_new, prefix.k.shape[2])  # every row's tokens in flight lie below
        mask = in_flight_mask(prefix, end, new_mask, n_new)  # (B, 1, T, end)
        k, v = prefix.k[:, :, :end], prefix.v[:, :, :end]  # views
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
    k = torch.cat([prefix.k[:, :, :used], k_new], dim=2)  # (B, Hkv, S+T, D)
    v = torch.cat([prefix.v[:, :, :used], v_new], dim=2)
    mask = full_mask(prefix, used, new_mask, n_new)  # (B, 1, T, S+T)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
