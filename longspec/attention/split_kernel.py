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
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

TARGET_PROGRAMS = 512  # enough programs to fill a large GPU several times over
LN2 = tl.constexpr(0.6931471805599453)  # used inside kernels
LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


@dataclass
class Launch:
    """Launch settings (measured on the H200 by experiments/gpu/tune_kernel.py)."""

    max_block_m: int = 64  # query rows per program (a power of two >= 16)
    block_n: int = 64  # keys per loop step (a power of two >= 16)
    num_warps: int = 4
    stages: int = 2  # software-pipelining depth of the key loop


LAUNCH = Launch()


@triton.jit
def _online_softmax_block(
    q, k, v, vis, m_i, l_i, acc, scale, PRECISION: tl.constexpr, MASKED: tl.constexpr
):
    """Fold one key block into the running max m_i, sum l_i and output acc of each row.

    q (BM, D), k (D, BN), v (BN, D), vis (BM, BN) bool (read only when MASKED); scores in
    log2 units (scale holds log2(e)), so exp2 is used.
    """
    s = tl.dot(q, k, input_precision=PRECISION) * scale  # (BM, BN), log2 units
    if MASKED:
        s = tl.where(vis, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, 1))
    m_safe = m_new  # unmasked: every row saw a finite score
    if MASKED:
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing seen yet
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])  # (BM, BN)
    l_new = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_new, acc


@triton.jit
def _visible(keys, key_ok, length, t, row_ok, keep_row, tree_row, stree_t,
             HAS_KEEP: tl.constexpr, IN_FLIGHT: tl.constexpr, TREE: tl.constexpr):  # fmt: skip
    """(BM, BN) bool: cached keys below ``length`` (and kept); with IN_FLIGHT, the query
    tokens' own keys at slots length + i, causally or by the tree mask row of token t."""
    cached = keys < length  # (BN,)
    seen = cached & key_ok
    if HAS_KEEP:
        seen = seen & (tl.load(keep_row + keys, seen, other=0) != 0)
    vis = seen[None, :] & row_ok[:, None]  # (BM, BN)
    if IN_FLIGHT:
        rel = keys - length  # (BN,) index among the tokens in flight
        fresh = (~cached & key_ok)[None, :] & row_ok[:, None]  # (BM, BN)
        if TREE:
            ptrs = tree_row + t[:, None] * stree_t + rel[None, :]
            vis = vis | (fresh & (tl.load(ptrs, fresh, other=0) != 0))
        else:
            vis = vis | (fresh & (rel[None, :] <= t[:, None]))
    return vis


@triton.jit
def _key_block(
    n0, end, q, m_i, l_i, acc, length, t, row_ok, dims, d_ok, keep_row, tree_row, stree_t,
    k_head, v_head, sk_s, sv_s, scale, BLOCK_N: tl.constexpr, HAS_KEEP: tl.constexpr,
    IN_FLIGHT: tl.constexpr, TREE: tl.constexpr, PRECISION: tl.constexpr,
    FULL: tl.constexpr, EVEN_D: tl.constexpr,
):  # fmt: skip
    """Keys n0 .. n0 + BLOCK_N (below ``end``) of one head folded into the running state.

    FULL: every key of the block is cached, below ``length`` and unmasked, so no
    visibility mask is built (query rows past the last are computed and never stored).
    """
    keys = n0 + tl.arange(0, BLOCK_N)  # (BN,)
    if FULL:
        if EVEN_D:
            k = tl.load(k_head + keys[None, :] * sk_s + dims[:, None])  # (D, BN)
            v = tl.load(v_head + keys[:, None] * sv_s + dims[None, :])  # (BN, D)
        else:
            k = tl.load(k_head + keys[None, :] * sk_s + dims[:, None], d_ok[:, None], 0.0)
            v = tl.load(v_head + keys[:, None] * sv_s + dims[None, :], d_ok[None, :], 0.0)
        return _online_softmax_block(q, k, v, None, m_i, l_i, acc, scale, PRECISION, False)
    key_ok = keys < end
    vis = _visible(
        keys, key_ok, length, t, row_ok, keep_row, tree_row, stree_t, HAS_KEEP, IN_FLIGHT, TREE
    )  # fmt: skip
    k = tl.load(k_head + keys[None, :] * sk_s + dims[:, None], key_ok[None, :] & d_ok[:, None], 0.0)
    v = tl.load(v_head + keys[:, None] * sv_s + dims[None, :], key_ok[:, None] & d_ok[None, :], 0.0)
    return _online_softmax_block(q, k, v, vis, m_i, l_i, acc, scale, PRECISION, True)


@triton.jit
def _split_attention(
    q_ptr, k_ptr, v_ptr, len_ptr, keep_ptr, tree_ptr, o_ptr, lse_ptr,
    sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, skeep_b, stree_b, stree_t,
    so_s, so_b, so_h, so_t, sl_s, sl_b, sl_h,
    n_kv_heads, group, n_tokens, split_len, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, HAS_KEEP: tl.constexpr, IN_FLIGHT: tl.constexpr, TREE: tl.constexpr,
    PRECISION: tl.constexpr, SPLIT_BLOCKS: tl.constexpr, DYNAMIC: tl.constexpr,
    STAGES: tl.constexpr, EVEN_D: tl.constexpr,
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
    n_new = n_tokens if IN_FLIGHT else 0
    end = tl.minimum(start + split_len, length + n_new)
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
    keep_row, tree_row = keep_ptr + b * skeep_b, tree_ptr + b * stree_b
    k_head, v_head = k_ptr + b * sk_b + h * sk_h, v_ptr + b * sv_b + h * sv_h
    # Blocks wholly below the committed length need no mask (none when a keep mask applies).
    n_full = tl.maximum(tl.minimum(end, length) - start, 0) // BLOCK_N  # unmasked blocks
    full_end = start if HAS_KEEP else start + n_full * BLOCK_N
    if DYNAMIC:  # compiled: loops over exactly this split's blocks, software-pipelined
        for n0 in tl.range(start, full_end, BLOCK_N, num_stages=STAGES):
            m_i, l_i, acc = _key_block(
                n0, end, q, m_i, l_i, acc, length, t, row_ok, dims, d_ok, keep_row, tree_row,
                stree_t, k_head, v_head, sk_s, sv_s, scale, BLOCK_N, HAS_KEEP, IN_FLIGHT, TREE,
                PRECISION, True, EVEN_D,
            )  # fmt: skip
        for n0 in tl.range(full_end, end, BLOCK_N, num_stages=STAGES):
            m_i, l_i, acc = _key_block(
                n0, end, q, m_i, l_i, acc, length, t, row_ok, dims, d_ok, keep_row, tree_row,
                stree_t, k_head, v_head, sk_s, sv_s, scale, BLOCK_N, HAS_KEEP, IN_FLIGHT, TREE,
                PRECISION, False, EVEN_D,
            )  # fmt: skip
    else:  # the interpreter needs a constant trip count; blocks past the end skip
        for i in range(SPLIT_BLOCKS):
            n0 = start + i * BLOCK_N
            if n0 < full_end:
                m_i, l_i, acc = _key_block(
                    n0, end, q, m_i, l_i, acc, length, t, row_ok, dims, d_ok, keep_row,
                    tree_row, stree_t, k_head, v_head, sk_s, sv_s, scale, BLOCK_N, HAS_KEEP,
                    IN_FLIGHT, TREE, PRECISION, True, EVEN_D,
                )  # fmt: skip
            elif n0 < end:
                m_i, l_i, acc = _key_block(
                    n0, end, q, m_i, l_i, acc, length, t, row_ok, dims, d_ok, keep_row,
                    tree_row, stree_t, k_head, v_head, sk_s, sv_s, scale, BLOCK_N, HAS_KEEP,
                    IN_FLIGHT, TREE, PRECISION, False, EVEN_D,
                )  # fmt: skip

    seen = l_i > 0
    lse = tl.where(seen, (m_i + tl.log2(tl.where(seen, l_i, 1.0))) * LN2, float("-inf"))
    out = acc / tl.where(seen, l_i, 1.0)[:, None]
    o_off = split * so_s + b * so_b + qh * so_h + t * so_t
    tl.store(o_ptr + o_off[:, None] + dims[None, :], out, row_ok[:, None] & d_ok[None, :])
    tl.store(lse_ptr + split * sl_s + b * sl_b + qh * sl_h + t, lse, row_ok)


def _n_splits(n_keys: int, programs_per_split: int, block_n: int) -> int:
    """Key splits so that the launch has about TARGET_PROGRAMS programs."""
    wanted = math.ceil(TARGET_PROGRAMS / max(programs_per_split, 1))
    return max(1, min(wanted, math.ceil(n_keys / block_n)))


def split_attention_lse(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lengths: Tensor,
    keep: Tensor | None = None,
    in_flight: bool = False,
    tree_mask: Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """Attention of q (B, Hq, T, D) over buffers k/v (B, Hkv, S, D).

    Row b sees the cached slots below lengths[b] (B,), hidden further where keep (B, S) is
    False. With ``in_flight`` the T query tokens' own keys sit at slots lengths[b] + i and
    are seen causally, or where tree_mask (B, T, T) allows. Returns out (B, Hq, T, D) in
    ``out_dtype`` and lse (B, Hq, T) float32 (-inf, and out 0, where nothing is seen).
    The launch depends only on tensor shapes, so it can be captured in a CUDA graph.
    """
    batch, n_heads, n_tokens, head_dim = q.shape
    n_kv, n_keys = k.shape[1], k.shape[2]
    group = n_heads // n_kv
    rows = group * n_tokens
    block_m = min(max(triton.next_power_of_2(rows), 16), LAUNCH.max_block_m)
    n_mblocks = math.ceil(rows / block_m)
    block_n = LAUNCH.block_n
    n_splits = _n_splits(n_keys, batch * n_kv * n_mblocks, block_n)
    split_len = math.ceil(math.ceil(n_keys / n_splits) / block_n) * block_n
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    o_part = q.new_empty((n_splits, batch, n_heads, n_tokens, head_dim), dtype=torch.float32)
    lse_part = q.new_empty((n_splits, batch, n_heads, n_tokens), dtype=torch.float32)
    keep_arg = keep.contiguous().view(torch.uint8) if keep is not None else lengths
    tree_arg = tree_mask.contiguous().view(torch.uint8) if tree_mask is not None else lengths
    grid = (n_splits, batch * n_kv, n_mblocks)
    _split_attention[grid](
        q, k, v, lengths, keep_arg, tree_arg, o_part, lse_part,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), keep_arg.stride(0) if keep is not None else 0,
        tree_arg.stride(0) if tree_mask is not None else 0,
        tree_arg.stride(1) if tree_mask is not None else 0,
        *o_part.stride()[:4], *lse_part.stride()[:3],
        n_kv, group, n_tokens, split_len, head_dim**-0.5 * LOG2E,
        HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), BLOCK_M=block_m,
        BLOCK_N=block_n, HAS_KEEP=keep is not None, IN_FLIGHT=in_flight,
        TREE=tree_mask is not None, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        # compiled kernels loop dynamically: a constant 0 keeps one binary for all lengths
        SPLIT_BLOCKS=split_len // block_n if INTERPRET else 0, DYNAMIC=not INTERPRET,
        STAGES=LAUNCH.stages, EVEN_D=head_dim == _block_d(head_dim),
        num_warps=LAUNCH.num_warps,
    )  # fmt: skip
    return merge_splits(o_part, lse_part, out_dtype)


def _block_d(head_dim: int) -> int:
    return triton.next_power_of_2(max(head_dim, 16))


@triton.jit
def _merge_splits(
    o_ptr, lse_ptr, out_ptr, lse_out_ptr, n_splits, so_s, sl_s,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):  # fmt: skip
    """One query row: softmax-weighted sum of its split outputs by their LSE."""
    row = tl.program_id(0)
    splits = tl.arange(0, BLOCK_S)
    dims = tl.arange(0, BLOCK_D)
    s_ok, d_ok = splits < n_splits, dims < HEAD_DIM
    lse = tl.load(lse_ptr + splits * sl_s + row, s_ok, other=float("-inf"))  # (BS,)
    top = tl.max(lse, 0)
    top = tl.where(top == float("-inf"), 0.0, top)
    w = tl.exp(lse - top)  # (BS,), 0 for splits that saw nothing
    total = tl.sum(w, 0)
    parts = tl.load(o_ptr + splits[:, None] * so_s + row * HEAD_DIM + dims[None, :],
                    s_ok[:, None] & d_ok[None, :], other=0.0)  # fmt: skip
    out = tl.sum(w[:, None] * parts, 0) / tl.where(total > 0, total, 1.0)  # (BD,)
    tl.store(out_ptr + row * HEAD_DIM + dims, out.to(out_ptr.dtype.element_ty), d_ok)
    tl.store(lse_out_ptr + row, tl.where(total > 0, top + tl.log(total), float("-inf")))


def merge_splits(
    o_part: Tensor, lse_part: Tensor, out_dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Exact merge of contiguous per-split partials o (S, B, H, T, D), lse (S, B, H, T)
    into out (B, H, T, D) in ``out_dtype`` and lse (B, H, T) float32."""
    n_splits, head_dim = o_part.shape[0], o_part.shape[-1]
    out = o_part.new_empty(o_part.shape[1:], dtype=out_dtype)
    lse = lse_part.new_empty(lse_part.shape[1:])
    n_rows = lse.numel()
    _merge_splits[(n_rows,)](
        o_part, lse_part, out, lse, n_splits, o_part.stride(0), lse_part.stride(0),
        HEAD_DIM=head_dim, BLOCK_S=triton.next_power_of_2(n_splits), BLOCK_D=_block_d(head_dim),
    )  # fmt: skip
    return out, lse
