"""The draft's ring visibility as one Triton kernel (GPU fast path of
``DraftCache.ring_visible`` for a level whose nodes share one position).

torch builds the (B, C) mask from ``ring_pos`` in six element-wise launches (three
comparisons, a subtraction, two ands), every draft level; here it is one.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _ring_keep(pos_ptr, q_ptr, out_ptr, n_slots, window, s_pos, s_q, BLOCK: tl.constexpr):
    """Row b = program 0, slot block = program 1: slot c is kept when its position p is a
    committed one (p >= 0) inside the query's window (q - window < p < q)."""
    b, blk = tl.program_id(0), tl.program_id(1)
    slots = blk * BLOCK + tl.arange(0, BLOCK)
    ok = slots < n_slots
    kpos = tl.load(pos_ptr + b * s_pos + slots, ok, other=-1)  # (BLOCK,)
    qpos = tl.load(q_ptr + b * s_q)
    keep = (kpos >= 0) & (kpos < qpos) & (kpos > qpos - window)
    tl.store(out_ptr + b * n_slots + slots, keep.to(tl.int8), ok)


def ring_keep(ring_pos: Tensor, qpos: Tensor, window: int) -> Tensor:
    """ring_pos (B, C) positions per slot (-1: empty), qpos (B,) each row's query
    position -> (B, C) bool, ``DraftCache.ring_visible(qpos[:, None])[:, 0]``."""
    batch, n_slots = ring_pos.shape
    out = torch.empty(batch, n_slots, dtype=torch.int8, device=ring_pos.device)
    block = min(triton.next_power_of_2(n_slots), 1024)
    _ring_keep[(batch, triton.cdiv(n_slots, block))](
        ring_pos, qpos, out, n_slots, window, ring_pos.stride(0), qpos.stride(0), BLOCK=block
    )
    return out.view(torch.bool)
