"""Triton kernels that fuse the small element-wise steps of a decoder layer (GPU fast path).

Each one reproduces the rounding of the transformers modules it replaces (every
intermediate rounded to the model's dtype where those modules round), so greedy tokens
stay those of the plain path; the plain path remains the reference they are tested
against (on CPU under ``TRITON_INTERPRET=1``).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor


@triton.jit
def _add_rms_norm(
    x_ptr, d_ptr, w_ptr, x_out_ptr, y_ptr, ids_ptr, n_cols, eps,
    HAS_DELTA: tl.constexpr, GATHER: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    """One row: x += delta (rounded), y = weight * round(x * rsqrt(mean(x^2) + eps)).
    GATHER: x is row ids[row] of the table at x_ptr (an embedding), copied to x_out."""
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    ok = cols < n_cols
    dtype = x_ptr.dtype.element_ty
    src = tl.load(ids_ptr + row).to(tl.int64) if GATHER else row
    x = tl.load(x_ptr + src * n_cols + cols, ok, other=0.0)
    if GATHER:
        tl.store(x_out_ptr + row * n_cols + cols, x, ok)
    if HAS_DELTA:
        d = tl.load(d_ptr + row * n_cols + cols, ok, other=0.0)
        x = (x.to(tl.float32) + d.to(tl.float32)).to(dtype)
        tl.store(x_out_ptr + row * n_cols + cols, x, ok)
    xf = x.to(tl.float32)
    var = tl.sum(xf * xf, 0) / n_cols
    normed = (xf * (1.0 / tl.sqrt(var + eps))).to(dtype)
    w = tl.load(w_ptr + cols, ok, other=0.0)
    tl.store(y_ptr + row * n_cols + cols, (w.to(tl.float32) * normed.to(tl.float32)).to(dtype), ok)


def add_rms_norm(
    x: Tensor, delta: Tensor | None, weight: Tensor, eps: float
) -> tuple[Tensor, Tensor]:
    """(x + delta, RMSNorm(x + delta)) for x, delta (..., H) contiguous; delta None:
    (x, RMSNorm(x))."""
    n_cols = x.shape[-1]
    y = x.new_empty(x.shape)
    x_out = x.new_empty(x.shape) if delta is not None else x
    _add_rms_norm[(x.numel() // n_cols,)](
        x, delta if delta is not None else x, weight, x_out, y, x, n_cols, eps,
        HAS_DELTA=delta is not None, GATHER=False, BLOCK=triton.next_power_of_2(n_cols),
    )  # fmt: skip
    return x_out, y


def embed_rms_norm(ids: Tensor, table: Tensor, weight: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(table[ids], RMSNorm(table[ids])) for ids (...) and an embedding table (V, H):
    the lookup and the norm in one kernel (torch's small-index lookup alone took ~5 us
    on the H200 for a draft level's 16 rows)."""
    ids = ids.contiguous()
    n_cols = table.shape[-1]
    x = table.new_empty(*ids.shape, n_cols)
    y = torch.empty_like(x)
    _add_rms_norm[(ids.numel(),)](
        table, table, weight, x, y, ids, n_cols, eps,
        HAS_DELTA=False, GATHER=True, BLOCK=triton.next_power_of_2(n_cols),
    )  # fmt: skip
    return x, y


@triton.jit
def _round_mul(a, b, dtype: tl.constexpr):
    return (a.to(tl.float32) * b.to(tl.float32)).to(dtype)


@triton.jit
def _rotate(x1, x2, c1, c2, s1, s2, dtype: tl.constexpr):
    """x * cos + rotate_half(x) * sin, each product and the sum rounded as torch does."""
    o1 = _round_mul(x1, c1, dtype).to(tl.float32) + _round_mul(-x2, s1, dtype).to(tl.float32)
    o2 = _round_mul(x2, c2, dtype).to(tl.float32) + _round_mul(x1, s2, dtype).to(tl.float32)
    return o1.to(dtype), o2.to(dtype)


@triton.jit
def _rotary_into_cache(
    qkv_ptr, cos_ptr, sin_ptr, q_ptr, k_ptr, kc_ptr, vc_ptr, start_ptr,
    s_row, s_cos, s_kc_b, s_kc_h, s_kc_s, n_tokens, n_q, n_kv,
    HEAD_DIM: tl.constexpr, BLOCK_H: tl.constexpr, PER_TOKEN: tl.constexpr,
):  # fmt: skip
    """One token, one head of the fused q|k|v row: rotate q (to q_ptr) or k (to k_ptr and
    the cache slot start[b] + t, or start[b, t] with PER_TOKEN), and copy v to its slot."""
    bt, head = tl.program_id(0), tl.program_id(1)
    b, t = bt // n_tokens, bt % n_tokens
    half = HEAD_DIM // 2
    d = tl.arange(0, BLOCK_H)
    ok = d < half
    dtype = qkv_ptr.dtype.element_ty
    row = qkv_ptr + bt * s_row
    c1, c2 = tl.load(cos_ptr + bt * s_cos + d, ok), tl.load(cos_ptr + bt * s_cos + half + d, ok)
    s1, s2 = tl.load(sin_ptr + bt * s_cos + d, ok), tl.load(sin_ptr + bt * s_cos + half + d, ok)
    is_q = head < n_q
    is_k = (head >= n_q) & (head < n_q + n_kv)
    # Per-head masks as where(head test, block mask, False): triton 3.9's interpreter
    # turns (block mask & scalar bool) into int32, which tl.load refuses as a mask.
    q_ok, k_ok = tl.where(is_q, ok, False), tl.where(is_k, ok, False)
    x1 = tl.load(row + head * HEAD_DIM + d, q_ok | k_ok, other=0.0)
    x2 = tl.load(row + head * HEAD_DIM + half + d, q_ok | k_ok, other=0.0)
    o1, o2 = _rotate(x1, x2, c1, c2, s1, s2, dtype)
    q_out = q_ptr + (bt * n_q + head) * HEAD_DIM  # q written (B, T, Hq, D)
    tl.store(q_out + d, o1, q_ok)
    tl.store(q_out + half + d, o2, q_ok)
    kh = tl.where(is_k, head - n_q, head - n_q - n_kv)  # this head's index among k (or v)
    slot = tl.load(start_ptr + bt) if PER_TOKEN else tl.load(start_ptr + b) + t
    cache_off = b * s_kc_b + kh * s_kc_h + slot * s_kc_s
    k_out = k_ptr + (bt * n_kv + kh) * HEAD_DIM  # k written (B, T, Hkv, D)
    tl.store(k_out + d, o1, k_ok)
    tl.store(k_out + half + d, o2, k_ok)
    tl.store(kc_ptr + cache_off + d, o1, k_ok)
    tl.store(kc_ptr + cache_off + half + d, o2, k_ok)
    full = tl.arange(0, 2 * BLOCK_H)
    v_ok = tl.where(head >= n_q + n_kv, full < HEAD_DIM, False)
    v = tl.load(row + head * HEAD_DIM + full, v_ok, other=0.0)
    tl.store(vc_ptr + cache_off + full, v, v_ok)


def rotary_into_cache(
    qkv: Tensor,
    cos: Tensor,
    sin: Tensor,
    k_cache: Tensor,
    v_cache: Tensor,
    start: Tensor,
    n_q: int,
    n_kv: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """Split a fused projection qkv (B, T, (Hq + 2 Hkv) * D), rotate q and k by cos/sin
    (B, T, D), write k and v to the cache (B, Hkv, S, D) at slots start[b] + t (start
    (B,)), or at start[b, t] (start (B, T): scattered slots, as the draft's ring takes).

    Returns q (B, Hq, T, D), k and v (B, Hkv, T, D) (views; k rotated, v from qkv).
    """
    batch, n_tokens, width = qkv.shape
    head_dim = width // (n_q + 2 * n_kv)
    q = qkv.new_empty(batch, n_tokens, n_q, head_dim)
    k = qkv.new_empty(batch, n_tokens, n_kv, head_dim)
    cos, sin, start = cos.contiguous(), sin.contiguous(), start.contiguous()
    _rotary_into_cache[(batch * n_tokens, n_q + 2 * n_kv)](
        qkv, cos, sin, q, k, k_cache, v_cache, start,
        qkv.stride(1), cos.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        n_tokens, n_q, n_kv, HEAD_DIM=head_dim, BLOCK_H=triton.next_power_of_2(head_dim // 2),
        PER_TOKEN=start.dim() == 2,
    )  # fmt: skip
    v = qkv[..., (n_q + n_kv) * head_dim :].unflatten(-1, (n_kv, head_dim))  # (B, T, Hkv, D)
    return q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)


@triton.jit
def _silu_mul(gu_ptr, out_ptr, n_cols, BLOCK: tl.constexpr):
    """One row of [gate | up]: round(round(silu(gate)) * up)."""
    row, block = tl.program_id(0), tl.program_id(1)
    cols = block * BLOCK + tl.arange(0, BLOCK)
    ok = cols < n_cols
    dtype = gu_ptr.dtype.element_ty
    g = tl.load(gu_ptr + row * 2 * n_cols + cols, ok, other=0.0).to(tl.float32)
    u = tl.load(gu_ptr + row * 2 * n_cols + n_cols + cols, ok, other=0.0)
    act = (g / (1.0 + tl.exp(-g))).to(dtype)
    tl.store(out_ptr + row * n_cols + cols, _round_mul(act, u, dtype), ok)


def silu_mul(gate_up: Tensor) -> Tensor:
    """(..., 2I) contiguous [gate | up] -> (..., I) silu(gate) * up."""
    n_cols = gate_up.shape[-1] // 2
    out = gate_up.new_empty(*gate_up.shape[:-1], n_cols)
    rows = gate_up.numel() // gate_up.shape[-1]
    block = 1024
    _silu_mul[(rows, triton.cdiv(n_cols, block))](gate_up, out, n_cols, BLOCK=block)
    return out
