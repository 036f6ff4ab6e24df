"""Matrix-vector products of a batch-1 decode step as one Triton kernel each (GPU fast path).

At one token per step a projection reads its whole weight matrix to produce one row, so
its time is the weight bytes over the memory bandwidth. For the o and down projections
(long inner dimension, few outputs) cuBLAS splits the inner dimension across blocks and
adds a reduction kernel; here every program owns a block of output rows over the whole
inner dimension, so one kernel does it, and it also takes in the steps around it:

- ``norm``: the input is the residual stream and its RMSNorm is formed on the fly (every
  program first sums the squares of the row, then scales each block as it loads it,
  rounded as ``add_rms_norm`` rounds), so no norm kernel runs before the q|k|v and
  gate|up projections;
- ``silu_gate``: the input is the MLP's [gate | up] row and silu(gate) * up is formed on
  the fly (rounded as ``silu_mul`` rounds), so no activation kernel runs before it;
- ``residual``: the residual stream is added to the output (rounded as a separate add of
  the rounded projection would be), so the next norm needs no residual input.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from longspec.attention.split_kernel import INTERPRET  # kernels on CPU (tests)


@dataclass
class GemvLaunch:
    """Launch settings (tuned on the H200 by experiments/gpu/gemv_probe.py)."""

    block_n: int = 8  # output rows per program
    block_k: int = 512  # inner-dimension columns per loop step
    num_warps: int = 4
    stages: int = 3


GEMV_LAUNCH = GemvLaunch()  # o and down projections (outputs <= inputs)
WIDE_LAUNCH = GemvLaunch(block_n=16, block_k=256)  # q|k|v and gate|up (outputs > inputs)


def launch_for(n_out: int, n_in: int) -> GemvLaunch:
    """The measured best of the two launches for a weight (n_out, n_in): on the H200, Llama-3-8B
    shapes, q|k|v 16.2 -> 14.8 us and gate|up 56.6 -> 55.3 us with the wide one, which
    loses on o and down (gemv_probe_h200_norm.json)."""
    return WIDE_LAUNCH if n_out > n_in else GEMV_LAUNCH


@triton.jit
def _load(ptrs, ok, EVEN: tl.constexpr):
    """Masked load (0 where not ok), or unmasked where every element is in bounds."""
    if EVEN:
        return tl.load(ptrs)
    return tl.load(ptrs, ok, other=0.0)


@triton.jit
def _inverse_rms(x_ptr, eps, N_IN: tl.constexpr, BLOCK_K: tl.constexpr, EVEN: tl.constexpr):
    """1 / sqrt(mean(x^2) + eps) of the row x (N_IN,), in float32."""
    squares = tl.zeros((BLOCK_K,), tl.float32)
    for k0 in tl.range(0, N_IN, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        xf = _load(x_ptr + cols, cols < N_IN, EVEN).to(tl.float32)
        squares += xf * xf
    return 1.0 / tl.sqrt(tl.sum(squares, 0) / N_IN + eps)


@triton.jit
def _input_block(
    x_ptr, norm_ptr, inv_rms, offs, cols, ok, col_ok, n_in,
    NORM: tl.constexpr, SILU_GATE: tl.constexpr, EVEN: tl.constexpr,
):  # fmt: skip
    """Float32 input block at x_ptr + offs (columns cols of each row): x, or its RMSNorm
    (weight round(x * inv_rms)), or round(round(silu(gate)) * up) of [gate | up] (up n_in
    further along the row). One row: offs = cols (BK,), inv_rms a scalar; rows
    (``gemm_rows``): offs (BM, BK), cols (1, BK), inv_rms (BM, 1)."""
    dtype = x_ptr.dtype.element_ty
    x = _load(x_ptr + offs, ok, EVEN)
    if NORM:
        normed = (x.to(tl.float32) * inv_rms).to(dtype)
        w = _load(norm_ptr + cols, col_ok, EVEN)
        x = (w.to(tl.float32) * normed.to(tl.float32)).to(dtype)
    if SILU_GATE:
        up = _load(x_ptr + n_in + offs, ok, EVEN)
        g = x.to(tl.float32)
        act = (g / (1.0 + tl.exp(-g))).to(dtype)
        x = (act.to(tl.float32) * up.to(tl.float32)).to(dtype)
    return x.to(tl.float32)


@triton.jit
def _gemv(
    x_ptr, w_ptr, b_ptr, norm_ptr, res_ptr, out_ptr, n_out, s_w, eps, N_IN: tl.constexpr,
    NORM: tl.constexpr, SILU_GATE: tl.constexpr, BIAS: tl.constexpr, RESIDUAL: tl.constexpr,
    EVEN: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """Rows pid * BLOCK_N ... of out = W @ x (+ bias, + residual), W (n_out, N_IN) with row
    stride s_w (the inner size is a constant: one binary per weight shape, a fixed trip
    count)."""
    rows = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    row_ok = rows < n_out
    inv_rms = 1.0
    if NORM:
        inv_rms = _inverse_rms(x_ptr, eps, N_IN, BLOCK_K, EVEN)
    acc = tl.zeros((BLOCK_N, BLOCK_K), tl.float32)
    for k0 in tl.range(0, N_IN, BLOCK_K, num_stages=STAGES):
        cols = k0 + tl.arange(0, BLOCK_K)  # (BK,)
        col_ok = cols < N_IN
        x = _input_block(
            x_ptr, norm_ptr, inv_rms, cols, cols, col_ok, col_ok, N_IN, NORM, SILU_GATE, EVEN
        )  # (BK,)
        w_ptrs = w_ptr + rows[:, None] * s_w + cols[None, :]  # (BN, BK)
        w = _load(w_ptrs, row_ok[:, None] & col_ok[None, :], EVEN)
        acc += w.to(tl.float32) * x[None, :]
    dtype = out_ptr.dtype.element_ty
    y = tl.sum(acc, 1)  # (BN,)
    if BIAS:
        y += tl.load(b_ptr + rows, row_ok, other=0.0).to(tl.float32)
    y = y.to(dtype)  # rounded as the projection's output
    if RESIDUAL:
        r = tl.load(res_ptr + rows, row_ok, other=0.0)
        y = (y.to(tl.float32) + r.to(tl.float32)).to(dtype)
    tl.store(out_ptr + rows, y, row_ok)


@dataclass
class RowNorm:
    """An RMSNorm applied to each input row of ``gemv`` / ``gemm_rows``: weight (K,), epsilon."""

    weight: Tensor
    eps: float


def input_width(
    kernel: str, x: Tensor, weight: Tensor, norm: RowNorm | None, silu_gate: bool
) -> int:
    """The width of x's rows that weight (N, K) projects: K, or 2K for [gate | up] with
    ``silu_gate``; a ValueError naming ``kernel`` for inputs it cannot take."""
    n_in = weight.shape[1]
    width = 2 * n_in if silu_gate else n_in
    if x.shape[-1] != width:
        raise ValueError(f"{kernel} takes rows of {width} values, got shape {tuple(x.shape)}")
    if weight.stride(1) != 1:
        raise ValueError(f"{kernel} needs a weight with unit column stride")
    if norm is not None and silu_gate:
        raise ValueError(f"{kernel} takes a norm or silu_gate, not both")
    return width


def gemv(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    norm: RowNorm | None = None,
    silu_gate: bool = False,
    launch: GemvLaunch | None = None,
) -> Tensor:
    """weight (N, K) times one input row, plus bias (N,) and residual (..., N) if given.

    The row is x (..., K), RMSNorm(x) with ``norm``, or silu(gate) * up of x (..., 2K) =
    [gate | up] with ``silu_gate``; the leading dimensions of x hold one row in all (a
    batch-1 decode step). Returns (..., N) in x's dtype.
    """
    n_out, n_in = weight.shape
    launch = launch or launch_for(n_out, n_in)
    width = input_width("gemv", x, weight, norm, silu_gate)
    if x.numel() != width:
        raise ValueError(f"gemv takes one row of {width} values, got shape {tuple(x.shape)}")
    x = x.contiguous()
    out = x.new_empty((*x.shape[:-1], n_out))
    res = residual.contiguous() if residual is not None else out
    even = n_out % launch.block_n == 0 and n_in % launch.block_k == 0
    _gemv[(triton.cdiv(n_out, launch.block_n),)](
        x, weight, bias if bias is not None else out, norm.weight if norm else out, res, out,
        n_out, weight.stride(0), norm.eps if norm else 0.0, N_IN=n_in,
        NORM=norm is not None, SILU_GATE=silu_gate, BIAS=bias is not None,
        RESIDUAL=residual is not None, EVEN=even,
        BLOCK_N=launch.block_n, BLOCK_K=launch.block_k, STAGES=launch.stages,
        num_warps=launch.num_warps,
    )  # fmt: skip
    return out


def kernel_input(x: Tensor) -> bool:
    """True where the projection kernels take x: on the GPU (or the interpreter), in half or
    single precision."""
    on_kernel = x.is_cuda or INTERPRET
    return on_kernel and x.dtype in (torch.float16, torch.bfloat16, torch.float32)


def one_row(x: Tensor) -> bool:
    """True where ``gemv`` serves the projections of x (..., K): one row in all, and a
    ``kernel_input``."""
    return x.numel() == x.shape[-1] and kernel_input(x)
