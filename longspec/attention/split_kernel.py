"""Split-KV attention with log-sum-exp, as one Triton kernel (GPU fast path).

Each program owns one key split of one (row, KV head) and a block of query rows; query
rows are the (query-head group, token) pairs that share a KV head, so grouped-query
attention reads every key block once per split (flash-decoding layout). The partial
outputs of the splits are merged exactly through their log-sum-exp.

Keys j of row b are visible when j < lengths[b], and ``keep[b, j]`` if given, and
j <= t for query token t when ``causal``. Runs on CUDA, or on CPU under
``TRITON_INTERPRET=1`` (the tests).
"""

from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

BLOCK_N = 64
TARGET_PROGRAMS = 512  # enough programs to fill a large GPU several times over


@triton.jit
def _online_softmax_block(q, k, v, vis, m_i, l_i, acc, scale, PRECISION: tl.constexpr):
    """Fold one key block into the running max m_i, sum l_i and output acc of each row.

    q (BM, D), k (D, BN), v (BN, D), vis (BM, BN) bool.
    """
    s = tl.dot(q, k, input_precision=PRECISION) * scale  # (BM, BN)
    s = tl.where(vis, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing seen yet
    alpha = tl.exp(m_i - m_safe)
    p = tl.exp(s - m_safe[:, None])  # (BM, BN)
    l_new = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_new, acc


@triton.jit
def _split_attention(
    q_ptr, k_ptr, v_ptr, len_ptr, keep_ptr, o_ptr, lse_ptr,
    sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, skeep_b,
    so_s, so_b, so_h, so_t, sl_s, sl_b, sl_h,
    n_kv_heads, group, n_tokens, split_len, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, HAS_KEEP: tl.constexpr, CAUSAL: tl.constexpr,
    PRECISION: tl.constexpr, SPLIT_BLOCKS: tl.constexpr,
):  # fmt: skip
    split, bh, mblock = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = bh // n_kv_heads, bh % n_kv_heads
    rows = mblock * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) = g * n_tokens + t
    row_ok = rows < group * n_tokens
    t = rows % n_tokens
    qh = h * group + rows // n_tokens  # query head of each row
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < HEAD_DIM
    q_off = b * sq_b + qh * sq_h + t * sq_t  # (BM,)
    q = tl.load(q_ptr + q_off[:, None] + dims[None, :], row_ok[:, None] & d_ok[None, :], other=0.0)

    length = tl.load(len_ptr + b).to(tl.int32)
    start = split * split_len
    end = tl.minimum(start + split_len, length)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    for i in range(SPLIT_BLOCKS):  # fixed trip count; blocks past the length skip
        n0 = start + i * BLOCK_N
        if n0 < end:
            keys = n0 + tl.arange(0, BLOCK_N)  # (BN,)
            key_ok = keys < end
            if HAS_KEEP:
                kept = tl.load(keep_ptr + b * skeep_b + keys, key_ok, other=0)
                key_ok = key_ok & (kept != 0)
            vis = key_ok[None, :] & row_ok[:, None]  # (BM, BN)
            if CAUSAL:
                vis = vis & (keys[None, :] <= t[:, None])
            k_rows = k_ptr + b * sk_b + h * sk_h + keys * sk_s  # (BN,) pointers
            v_rows = v_ptr + b * sv_b + h * sv_h + keys * sv_s
            k = tl.load(k_rows[None, :] + dims[:, None], key_ok[None, :] & d_ok[:, None], 0.0)
            v = tl.load(v_rows[:, None] + dims[None, :], key_ok[:, None] & d_ok[None, :], 0.0)
            m_i, l_i, acc = _online_softmax_block(q, k, v, vis, m_i, l_i, acc, scale, PRECISION)

    seen = l_i > 0
    lse = tl.where(seen, m_i + tl.log(tl.where(seen, l_i, 1.0)), float("-inf"))
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    o_off = split * so_s + b * so_b + qh * so_h + t * so_t
    tl.store(o_ptr + o_off[:, None] + dims[None, :], out, row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + split * sl_s + b * sl_b + qh * sl_h + t, lse, row_ok)


def _n_splits(n_keys: int, programs_per_split: int) -> int:
    """Key splits so that the launch has about TARGET_PROGRAMS programs."""
    wanted = math.ceil(TARGET_PROGRAMS / max(programs_per_split, 1))
    return max(1, min(wanted, math.ceil(n_keys / BLOCK_N)))


def split_attention_lse(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lengths: Tensor,
    keep: Tensor | None = None,
    causal: bool = False,
) -> tuple[Tensor, Tensor]:
    """Attention of q (B, Hq, T, D) over buffers k/v (B, Hkv, S, D), valid below lengths (B,).

    keep (B, S) bool further hides keys; ``causal`` lets token t see keys j <= t. Returns
    out (B, Hq, T, D) float32 and lse (B, Hq, T) float32 (-inf and 0 where nothing is seen).
    The launch shape depends only on the tensor shapes, so it can be captured in a graph.
    """
    batch, n_heads, n_tokens, head_dim = q.shape
    n_kv, n_keys = k.shape[1], k.shape[2]
    group = n_heads // n_kv
    rows = group * n_tokens
    block_m = 16 if rows <= 16 else 32 if rows <= 32 else 64
    n_mblocks = math.ceil(rows / block_m)
    n_splits = _n_splits(n_keys, batch * n_kv * n_mblocks)
    split_len = math.ceil(math.ceil(n_keys / n_splits) / BLOCK_N) * BLOCK_N
    q = q if q.stride(-1) == 1 else q.contiguous()
    k = k if k.stride(-1) == 1 else k.contiguous()
    v = v if v.stride(-1) == 1 else v.contiguous()
    o_part = q.new_empty((n_splits, batch, n_heads, n_tokens, head_dim), dtype=torch.float32)
    lse_part = q.new_empty((n_splits, batch, n_heads, n_tokens), dtype=torch.float32)
    keep_arg = keep.view(torch.uint8) if keep is not None else lengths
    grid = (n_splits, batch * n_kv, n_mblocks)
    _split_attention[grid](
        q, k, v, lengths, keep_arg, o_part, lse_part,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), keep.stride(0) if keep is not None else 0,
        *o_part.stride()[:4], *lse_part.stride()[:3],
        n_kv, group, n_tokens, split_len, head_dim**-0.5,
        HEAD_DIM=head_dim, BLOCK_D=triton.next_power_of_2(max(head_dim, 16)), BLOCK_M=block_m,
        BLOCK_N=BLOCK_N, HAS_KEEP=keep is not None, CAUSAL=causal,
        PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        SPLIT_BLOCKS=split_len // BLOCK_N,
    )  # fmt: skip
    return merge_splits(o_part, lse_part)


def merge_splits(o_part: Tensor, lse_part: Tensor) -> tuple[Tensor, Tensor]:
    """Exact merge of per-split partial attentions o (S, B, H, T, D), lse (S, B, H, T)."""
    lse = torch.logsumexp(lse_part, dim=0)  # (B, H, T); -inf where no split saw a key
    weights = torch.exp(lse_part - lse).nan_to_num_(0.0)  # (S, B, H, T)
    return (weights[..., None] * o_part).sum(0), lse  # (B, H, T, D), (B, H, T)
