"""Projections of a few rows (a tree's verification, a short prefill chunk) as one Triton
kernel each, with the steps around them folded in (GPU fast path, off by default).

The one-row kernel (``longspec.models.gemv``) folds a layer's norms, SiLU-multiply and
residual adds into its projections; this is the same for up to ``MAX_ROWS`` rows. At ~70
rows and a small hidden size (SmolLM2: 576) every kernel of a layer is a few microseconds
of latency, so a layer of seven kernels instead of ten is what counts, not the arithmetic.
Each program owns a (rows x outputs) tile and runs the whole inner dimension through
``tl.dot`` with float32 accumulation:

- ``norm``: every row's inverse RMS is summed first, then each input block is normalised
  as it is loaded (rounded as ``add_rms_norm`` rounds);
- ``silu_gate``: the input rows are [gate | up], silu(gate) * up is formed as loaded;
- ``bias`` is added to the float32 tile before its one rounding (as cuBLAS's bias
  epilogue does), ``residual`` after it (rounded as a separate add).

Measured on the H200 (float16, SmolLM2's four projections of a layer at 70 rows, each with
the kernels it folds in; ``experiments/gpu/rows_probe.py``): cuBLAS + add_rms_norm /
silu_mul / add 24.9 us, this kernel at its best launch (the default below) 45.2 us
(``rows_probe_h200_sweep2.json``). Only the o projection can win, at a launch of its own
(4.6 vs 5.2 us; 6.3 us at the default); the down projection, whose inner dimension is
2.7x longer, takes 24 us against cuBLAS's 8. With the first default (128-row blocks,
64-column steps) a graphed verification took 4.1 ms against 1.25 ms without
(``rows_probe_h200_rounds.json``). So ``FusedLayers`` leaves it off; it stays, tested, as
the measured alternative for other cards (``experiments/gpu/rows_probe.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

from longspec.models.gemv import RowNorm, _input_block, input_width, kernel_input

MAX_ROWS = 128  # more rows (a prefill chunk): cuBLAS and the separate kernels


@dataclass
class RowsLaunch:
    """Launch settings: the best total of SmolLM2's four projections at 70 rows on the H200
    (experiments/gpu/rows_probe.py; 45.2 us, against 92-121 us with 128-row blocks)."""

    max_block_m: int = 16  # rows per program (a power of two >= 16)
    block_n: int = 32  # outputs per program
    block_k: int = 128  # inner-dimension columns per loop step
    num_warps: int = 4
    stages: int = 1


ROWS_LAUNCH = RowsLaunch()


@triton.jit
def _rows_inverse_rms(
    x_ptr, offs, row_ok, eps, N_IN: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr
):
    """(BM,) float32 1 / sqrt(mean(x^2) + eps) of the rows starting at x_ptr + offs (BM,)."""
    squares = tl.zeros((BLOCK_M, BLOCK_K), tl.float32)
    for k0 in tl.range(0, N_IN, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)  # (BK,)
        ok = row_ok[:, None] & (cols < N_IN)[None, :]
        xf = tl.load(x_ptr + offs[:, None] + cols[None, :], ok, other=0.0).to(tl.float32)
        squares += xf * xf  # (BM, BK)
    return 1.0 / tl.sqrt(tl.sum(squares, 1) / N_IN + eps)


@triton.jit
def _gemm_rows(
    x_ptr, w_ptr, b_ptr, norm_ptr, res_ptr, out_ptr, n_rows, n_out, s_x, s_w, eps,
    N_IN: tl.constexpr, NORM: tl.constexpr, SILU_GATE: tl.constexpr, BIAS: tl.constexpr,
    RESIDUAL: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, STAGES: tl.constexpr,
):  # fmt: skip
    """Tile (rows pid1 * BLOCK_M ..., outputs pid0 * BLOCK_N ...) of out = x @ W^T (+ bias,
    + residual); x rows of stride s_x, W (n_out, N_IN) of row stride s_w, out and residual
    contiguous (n_rows, n_out)."""
    rows = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,)
    outs = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,)
    row_ok, out_ok = rows < n_rows, outs < n_out
    inv_rms = tl.full((BLOCK_M, 1), 1.0, tl.float32)
    if NORM:
        inv_rms = _rows_inverse_rms(x_ptr, rows * s_x, row_ok, eps, N_IN, BLOCK_M, BLOCK_K)[:, None]
    dtype = out_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in tl.range(0, N_IN, BLOCK_K, num_stages=STAGES):
        cols = k0 + tl.arange(0, BLOCK_K)  # (BK,)
        col_ok = cols < N_IN
        offs = rows[:, None] * s_x + cols[None, :]  # (BM, BK)
        ok = row_ok[:, None] & col_ok[None, :]
        x = _input_block(
            x_ptr, norm_ptr, inv_rms, offs, cols[None, :], ok, col_ok[None, :], N_IN,
            NORM, SILU_GATE, False,
        )  # (BM, BK) float32, values of the model's dtype  # fmt: skip
        w = tl.load(w_ptr + outs[:, None] * s_w + cols[None, :],
                    out_ok[:, None] & col_ok[None, :], other=0.0)  # fmt: skip  # (BN, BK)
        acc += tl.dot(x.to(w.dtype), tl.trans(w), input_precision=PRECISION)  # (BM, BN)
    if BIAS:
        acc += tl.load(b_ptr + outs, out_ok, other=0.0).to(tl.float32)[None, :]
    y = acc.to(dtype)  # rounded as the projection's output
    out_offs = rows[:, None] * n_out + outs[None, :]  # (BM, BN)
    ok = row_ok[:, None] & out_ok[None, :]
    if RESIDUAL:
        r = tl.load(res_ptr + out_offs, ok, other=0.0)
        y = (y.to(tl.float32) + r.to(tl.float32)).to(dtype)
    tl.store(out_ptr + out_offs, y, ok)


def gemm_rows(
    x: Tensor,
    weight: Tensor,
    bias: Tensor | None = None,
    residual: Tensor | None = None,
    norm: RowNorm | None = None,
    silu_gate: bool = False,
    launch: RowsLaunch | None = None,
) -> Tensor:
    """weight (N, K) times each row of x, plus bias (N,) and residual (..., N) if given.

    The rows are x (..., K), their RMSNorm with ``norm``, or silu(gate) * up of x (..., 2K)
    = [gate | up] with ``silu_gate``. Returns (..., N) in x's dtype.
    """
    launch = launch or ROWS_LAUNCH
    n_out, n_in = weight.shape
    width = input_width("gemm_rows", x, weight, norm, silu_gate)
    x = x.contiguous()
    n_rows = x.numel() // width
    out = x.new_empty((*x.shape[:-1], n_out))
    res = residual.contiguous() if residual is not None else out
    block_m = min(max(16, triton.next_power_of_2(n_rows)), launch.max_block_m)
    grid = (triton.cdiv(n_out, launch.block_n), triton.cdiv(n_rows, block_m))
    _gemm_rows[grid](
        x, weight, bias if bias is not None else out, norm.weight if norm else out, res, out,
        n_rows, n_out, width, weight.stride(0), norm.eps if norm else 0.0, N_IN=n_in,
        NORM=norm is not None, SILU_GATE=silu_gate, BIAS=bias is not None,
        RESIDUAL=residual is not None,
        PRECISION="ieee" if x.dtype == torch.float32 else "tf32",
        BLOCK_M=block_m, BLOCK_N=launch.block_n, BLOCK_K=launch.block_k, STAGES=launch.stages,
        num_warps=launch.num_warps,
    )  # fmt: skip
    return out


def few_rows(x: Tensor) -> bool:
    """True where ``gemm_rows`` serves the projections of x (..., K): 2 to MAX_ROWS rows,
    and a ``kernel_input``."""
    return 1 < x.numel() // x.shape[-1] <= MAX_ROWS and kernel_input(x)
