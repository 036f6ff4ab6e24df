"""One beam level's ranking (``longspec.tree.best_children``) as two Triton kernels.

torch takes ~30-40 us for any top-k on an H200, however small (radix select in several
launches; ``experiments/results/topk_probe_h200.json``), and a level needs a log-sum-exp,
a top-k per parent and a top-k over the candidates. Here:

* ``_parent_topk``: one program per (row, parent) holds the parent's K scores in
  registers, takes their log-sum-exp, then the ``per`` largest by repeated max-and-mask,
  and writes each as a cumulative log-prob candidate (cum + score - lse) with its column.
* ``_rank_candidates``: one program per row ranks its n * per candidates the same way.

Values and order match torch's top-k (largest first); among exactly equal values the
lowest index goes first. For draft vocabularies up to ``MAX_COLUMNS`` columns.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_COLUMNS = 16384  # a parent's scores live in one program's registers


@triton.jit
def _parent_topk(
    s_ptr, cum_ptr, val_ptr, col_ptr, n_cols,
    PER: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Row-parent r = program 0: its PER best (cum + score - lse, column) pairs."""
    r = tl.program_id(0)
    cols = tl.arange(0, BLOCK_K)
    x = tl.load(s_ptr + r * n_cols + cols, cols < n_cols, other=float("-inf"))  # (BK,)
    top = tl.max(x, 0)
    lse = top + tl.log(tl.sum(tl.exp(x - top), 0))
    base = tl.load(cum_ptr + r) - lse
    slots = tl.arange(0, BLOCK_P)
    vals = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    picks = tl.zeros((BLOCK_P,), tl.int32)
    for i in tl.static_range(PER):
        best, where = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
        vals = tl.where(slots == i, base + best, vals)
        picks = tl.where(slots == i, where, picks)
        x = tl.where(cols == where, float("-inf"), x)
    ok = slots < PER
    tl.store(val_ptr + r * PER + slots, vals, ok)
    tl.store(col_ptr + r * PER + slots, picks, ok)


@triton.jit
def _rank_candidates(
    val_ptr, col_ptr, out_val_ptr, out_col_ptr, out_parent_ptr, n_cand,
    PER: tl.constexpr, WIDTH: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    """Row b = program 0: the WIDTH best of its n * PER candidates."""
    b = tl.program_id(0)
    idx = tl.arange(0, BLOCK_C)
    x = tl.load(val_ptr + b * n_cand + idx, idx < n_cand, other=float("-inf"))  # (BC,)
    slots = tl.arange(0, BLOCK_W)
    vals = tl.full((BLOCK_W,), float("-inf"), tl.float32)
    picks = tl.zeros((BLOCK_W,), tl.int32)
    for i in tl.static_range(WIDTH):
        best, where = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
        vals = tl.where(slots == i, best, vals)
        picks = tl.where(slots == i, where, picks)
        x = tl.where(idx == where, float("-inf"), x)
    ok = slots < WIDTH
    cols = tl.load(col_ptr + b * n_cand + picks, ok, other=0)
    tl.store(out_val_ptr + b * WIDTH + slots, vals, ok)
    tl.store(out_col_ptr + b * WIDTH + slots, cols.to(tl.int64), ok)
    tl.store(out_parent_ptr + b * WIDTH + slots, (picks // PER).to(tl.int64), ok)


def best_children_kernel(
    scores: Tensor, cum: Tensor, width: int, per: int
) -> tuple[Tensor, Tensor, Tensor]:
    """``best_children`` of scores (B, n, K) float32 and cum (B, n): columns, parents,
    cumulative log-probs, each (B, width). ``per`` = min(width, K) candidates a parent."""
    batch, n, n_cols = scores.shape
    scores, cum = scores.contiguous(), cum.float().contiguous()
    cand_val = scores.new_empty(batch, n * per)  # (B, n*per) float32
    cand_col = scores.new_empty(batch, n * per, dtype=torch.int32)
    _parent_topk[(batch * n,)](
        scores, cum, cand_val, cand_col, n_cols, PER=per,
        BLOCK_K=triton.next_power_of_2(n_cols), BLOCK_P=triton.next_power_of_2(per),
        num_warps=8 if n_cols > 4096 else 4,
    )  # fmt: skip
    values = scores.new_empty(batch, width)
    cols = cand_col.new_empty(batch, width, dtype=torch.int64)
    parents = torch.empty_like(cols)
    _rank_candidates[(batch,)](
        cand_val, cand_col, values, cols, parents, n * per, PER=per, WIDTH=width,
        BLOCK_C=triton.next_power_of_2(n * per), BLOCK_W=triton.next_power_of_2(width),
    )  # fmt: skip
    return cols, parents, values
