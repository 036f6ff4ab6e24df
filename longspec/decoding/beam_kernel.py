"""One beam level's ranking (``longspec.tree.best_children``) as Triton kernels.

torch takes ~30-40 us for any top-k on an H200, however small (radix select in several
launches; ``experiments/results/topk_probe_h200.json``), and a level needs a log-sum-exp,
a top-k per parent and a top-k over the candidates. Here:

* ``_parent_topk``: one program per (row, parent) holds the parent's K scores in
  registers, takes their log-sum-exp, then the ``per`` largest by repeated max-and-mask,
  and writes each as a cumulative log-prob candidate (cum + score - lse) with its column.
* ``_rank_candidates``: one program per row ranks its n * per candidates the same way.

A vocabulary wider than ``MAX_COLUMNS`` (a full 128k vocabulary) is cut into chunks of
``CHUNK`` columns instead of ``_parent_topk``: ``_chunk_topk`` (one program per (row,
parent, chunk)) keeps each chunk's max, sum of exponentials and ``per`` best scores, and
``_merge_chunks`` (one program per (row, parent)) joins them into the parent's
log-sum-exp and candidates.

Values and order match torch's top-k (largest first); among exactly equal values the
lowest index goes first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import Tensor

MAX_COLUMNS = 16384  # up to this many, a parent's scores live in one program's registers
CHUNK = 8192  # columns of one ``_chunk_topk`` program


@triton.jit
def _top_slots(x, PER: tl.constexpr, BLOCK_P: tl.constexpr):
    """The PER largest of x (BX,), largest first (ties: lowest position first): values
    and positions (BP,), -inf and 0 past PER."""
    where_x = tl.arange(0, x.shape[0])
    slots = tl.arange(0, BLOCK_P)
    vals = tl.full((BLOCK_P,), float("-inf"), tl.float32)
    picks = tl.zeros((BLOCK_P,), tl.int32)
    for i in tl.static_range(PER):
        best, where = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
        vals = tl.where(slots == i, best, vals)
        picks = tl.where(slots == i, where, picks)
        x = tl.where(where_x == where, float("-inf"), x)
    return vals, picks


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
    vals, picks = _top_slots(x, PER, BLOCK_P)
    slots = tl.arange(0, BLOCK_P)
    ok = slots < PER
    tl.store(val_ptr + r * PER + slots, tl.load(cum_ptr + r) - lse + vals, ok)
    tl.store(col_ptr + r * PER + slots, picks, ok)


@triton.jit
def _chunk_topk(
    s_ptr, stat_ptr, val_ptr, col_ptr, n_cols, n_chunks,
    PER: tl.constexpr, CHUNK: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Row-parent r = program 0, chunk c = program 1: the chunk's max and sum of
    exp(score - max) (stat[r, c, :]), its PER best raw scores and their columns."""
    r, c = tl.program_id(0), tl.program_id(1)
    cols = c * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(s_ptr + r * n_cols + cols, cols < n_cols, other=float("-inf"))  # (CH,)
    top = tl.max(x, 0)
    at = r * n_chunks + c
    tl.store(stat_ptr + at * 2, top)
    tl.store(stat_ptr + at * 2 + 1, tl.sum(tl.exp(x - top), 0))
    vals, picks = _top_slots(x, PER, BLOCK_P)
    slots = tl.arange(0, BLOCK_P)
    ok = slots < PER
    tl.store(val_ptr + at * PER + slots, vals, ok)
    tl.store(col_ptr + at * PER + slots, c * CHUNK + picks, ok)


@triton.jit
def _merge_chunks(
    stat_ptr, part_val_ptr, part_col_ptr, cum_ptr, val_ptr, col_ptr, n_chunks,
    PER: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_CP: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Row-parent r = program 0: its log-sum-exp from its chunks' stats, then its PER best
    (cum + score - lse, column) pairs among the chunks' candidates."""
    r = tl.program_id(0)
    chunks = tl.arange(0, BLOCK_C)
    c_ok = chunks < n_chunks
    m = tl.load(stat_ptr + (r * n_chunks + chunks) * 2, c_ok, other=float("-inf"))  # (BC,)
    z = tl.load(stat_ptr + (r * n_chunks + chunks) * 2 + 1, c_ok, other=0.0)
    top = tl.max(m, 0)
    lse = top + tl.log(tl.sum(z * tl.exp(m - top), 0))
    idx = tl.arange(0, BLOCK_CP)
    base = r * n_chunks * PER
    x = tl.load(part_val_ptr + base + idx, idx < n_chunks * PER, other=float("-inf"))
    vals, picks = _top_slots(x, PER, BLOCK_P)  # (BP,) positions among the candidates
    slots = tl.arange(0, BLOCK_P)
    ok = slots < PER
    cols = tl.load(part_col_ptr + base + picks, ok, other=0)
    tl.store(val_ptr + r * PER + slots, tl.load(cum_ptr + r) - lse + vals, ok)
    tl.store(col_ptr + r * PER + slots, cols, ok)


@triton.jit
def _rank_candidates(
    val_ptr, col_ptr, out_val_ptr, out_col_ptr, out_parent_ptr, n_cand,
    ids_ptr, mask_ptr, level_start, start, n_all,
    PER: tl.constexpr, WIDTH: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_W: tl.constexpr,
    GROW: tl.constexpr, HAS_IDS: tl.constexpr, BLOCK_A: tl.constexpr,
):  # fmt: skip
    """Row b = program 0: the WIDTH best of its n * PER candidates. With GROW, as a tree
    level: tokens (ids[column] with HAS_IDS) instead of columns, parents as node indices
    (level_start + parent), and each new node's ancestor-mask row (start + w) ORed with
    its parent's row."""
    b = tl.program_id(0)
    idx = tl.arange(0, BLOCK_C)
    x = tl.load(val_ptr + b * n_cand + idx, idx < n_cand, other=float("-inf"))  # (BC,)
    vals, picks = _top_slots(x, WIDTH, BLOCK_W)
    slots = tl.arange(0, BLOCK_W)
    ok = slots < WIDTH
    cols = tl.load(col_ptr + b * n_cand + picks, ok, other=0).to(tl.int64)
    parents = (picks // PER).to(tl.int64)
    tl.store(out_val_ptr + b * WIDTH + slots, vals, ok)
    if GROW:
        if HAS_IDS:
            cols = tl.load(ids_ptr + cols, ok, other=0)
        parents += level_start
        _grow_mask(mask_ptr + b * n_all * n_all, parents, slots, start, n_all, WIDTH, BLOCK_A)
    tl.store(out_col_ptr + b * WIDTH + slots, cols, ok)
    tl.store(out_parent_ptr + b * WIDTH + slots, parents, ok)


@triton.jit
def _grow_mask(mask_ptr, parents, slots, start, n_all, WIDTH: tl.constexpr,
               BLOCK_A: tl.constexpr):  # fmt: skip
    """Rows start + w of one (N+1, N+1) mask |= row parents[w] (a node sees what its
    parent sees)."""
    cols = tl.arange(0, BLOCK_A)
    ok = cols < n_all
    for w in tl.static_range(WIDTH):
        parent = tl.sum(tl.where(slots == w, parents, 0), 0)
        seen = tl.load(mask_ptr + parent * n_all + cols, ok, other=0)
        dst = mask_ptr + (start + w) * n_all + cols
        tl.store(dst, seen | tl.load(dst, ok, other=0), ok)


def best_children_kernel(
    scores: Tensor,
    cum: Tensor,
    width: int,
    per: int,
    chunk: int | None = None,
    grow: Growth | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """``best_children`` of scores (B, n, K) float32 and cum (B, n): columns, parents,
    cumulative log-probs, each (B, width). ``per`` = min(width, K) candidates a parent.
    ``chunk`` (a power of two >= per): columns a program ranks; None: all of them up to
    MAX_COLUMNS, else CHUNK. ``grow``: the level joins a tree (``tree.grow_level``):
    tokens and node-index parents come back, and the tree's mask is filled in place."""
    batch, n, n_cols = scores.shape
    scores, cum = scores.contiguous(), cum.float().contiguous()
    cand_val = scores.new_empty(batch, n * per)  # (B, n*per) float32
    cand_col = scores.new_empty(batch, n * per, dtype=torch.int32)
    if chunk is None and n_cols <= MAX_COLUMNS:
        _parent_topk[(batch * n,)](
            scores, cum, cand_val, cand_col, n_cols, PER=per,
            BLOCK_K=triton.next_power_of_2(n_cols), BLOCK_P=triton.next_power_of_2(per),
            num_warps=8 if n_cols > 4096 else 4,
        )  # fmt: skip
    else:
        _chunked_candidates(scores, cum, per, chunk or CHUNK, cand_val, cand_col)
    values = scores.new_empty(batch, width)
    cols = cand_col.new_empty(batch, width, dtype=torch.int64)
    parents = torch.empty_like(cols)
    g = grow or Growth(None, cols, 0, 0)  # unused pointers when not growing
    mask = g.mask.view(torch.uint8) if grow else cols
    n_all = g.mask.shape[-1] if grow else 1
    _rank_candidates[(batch,)](
        cand_val, cand_col, values, cols, parents, n * per,
        cols if g.ids is None else g.ids, mask, g.level_start, g.start, n_all,
        PER=per, WIDTH=width, BLOCK_C=triton.next_power_of_2(n * per),
        BLOCK_W=triton.next_power_of_2(width), GROW=grow is not None,
        HAS_IDS=g.ids is not None, BLOCK_A=triton.next_power_of_2(n_all),
    )  # fmt: skip
    return cols, parents, values


@dataclass
class Growth:
    """Where a ranked level joins its tree: ``ids`` (K,) token of each score column (None:
    the column), ``mask`` (B, N+1, N+1) contiguous bool ancestor mask, the node index of
    the parents' level's first node and of this level's first node."""

    ids: Tensor | None
    mask: Tensor
    level_start: int
    start: int


def _chunked_candidates(
    scores: Tensor, cum: Tensor, per: int, chunk: int, cand_val: Tensor, cand_col: Tensor
) -> None:
    """Each parent's ``per`` candidates into cand_val/cand_col (B, n*per), its columns
    ranked ``chunk`` at a time."""
    batch, n, n_cols = scores.shape
    n_chunks = math.ceil(n_cols / chunk)
    stats = scores.new_empty(batch * n, n_chunks, 2)  # (R, C, [max, sum exp])
    part_val = scores.new_empty(batch * n, n_chunks, per)  # (R, C, per)
    part_col = cand_col.new_empty(batch * n, n_chunks, per)
    block_p = triton.next_power_of_2(per)
    _chunk_topk[(batch * n, n_chunks)](
        scores, stats, part_val, part_col, n_cols, n_chunks, PER=per, CHUNK=chunk,
        BLOCK_P=block_p, num_warps=8 if chunk > 4096 else 4,
    )  # fmt: skip
    _merge_chunks[(batch * n,)](
        stats, part_val, part_col, cum, cand_val, cand_col, n_chunks, PER=per,
        BLOCK_C=triton.next_power_of_2(n_chunks),
        BLOCK_CP=triton.next_power_of_2(n_chunks * per), BLOCK_P=block_p,
    )  # fmt: skip
