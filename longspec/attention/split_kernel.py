"""Split-KV attention with log-sum-exp, as one Triton kernel (GPU fast path).

Each program owns one key split of one (row, KV head) and a block of query rows; query
rows are the (query-head group, token) pairs that share a KV head, so grouped-query
attention reads every key block once per split (flash-decoding layout). The partial
outputs of the splits are merged exactly through their log-sum-exp: by a second kernel
(``_merge_splits``), or, with ``fused_merge``, by the last program of each tile to finish
(split-K with a semaphore: one int32 counter per tile, see ``_tile_counters``). One split
needs no merge: its program writes the final result.

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
# The in-kernel merge is off by default: on an H200 (CUDA graphs, float16) the last program's
# merge of every split of its tile, one CTA, took longer than the merge kernel it saves. Fused
# vs two kernels, us a call: Llama-8B shape at 32k 59.0 vs 52.1 (1 token), 189.7 vs 152.7
# (70 tree tokens); SmolLM2 at 4k 19.9 vs 6.2 (1 token), 71.3 vs 14.9 (70 tokens).
FUSED_MERGE_DEFAULT = False  # what fused_merge=None means when compiled on CUDA
MERGE_TILE = 2048  # in-kernel merge: elements of (splits, rows, dims) loaded per step
MERGE_LSE_TILE = 2048  # in-kernel merge: elements of (splits, rows) of lse loaded per step
MERGE_STAGES = 3  # in-kernel merge: steps in flight (software pipelining)


@dataclass
class Launch:
    """Launch settings (measured on the H200 by experiments/gpu/tune_kernel.py)."""

    max_block_m: int = 64  # query rows per program (a power of two >= 16)
    block_n: int = 64  # keys per loop step (a power of two >= 16)
    num_warps: int = 4
    # Software-pipelining depth of the key loop: ``stages`` for blocks of more than 16 query
    # rows, ``step_stages`` for up to 16 (with the default max_block_m: verification and
    # prefill against a decode step). H200, with the masked tail unpipelined: Llama-8B
    # shape, 70 tree tokens, 128 -> 103 us at 32k and 456 -> 408 us at 128k from 2 to 3
    # stages; one token at 32k 43 us at 2, 50 us at 3 (results/tune_kernel_h200_tma_tail.json).
    stages: int = 3
    step_stages: int = 2
    # Key blocks a split holds at least, for blocks of more than 16 query rows: with few
    # (row block, KV head) tiles, aiming for TARGET_PROGRAMS programs would cut the keys
    # into splits of one or two blocks and leave the merge most of the work. H200, SmolLM2
    # shape, 70 tree tokens at 4k: 15.2 us at 1 (2-block splits), 11.1 us at 6 (10.2-11.1
    # at 4 to 8); the Llama-8B shape's splits of 40 blocks at 32k are the same launch at
    # any of these (tune_kernel_h200_splits.json).
    min_split_blocks: int = 6
    # Grid order: the query-row blocks of one key split run next to each other, so the
    # split's keys come from HBM once and from L2 for the other blocks; False: every split
    # of one row block first. H200, Llama-8B shape, 70 tree tokens: 142 -> 133 us at 32k,
    # 539 -> 464 us at 128k; one token unchanged (tune_kernel_h200_grid_order.json).
    rows_first: bool = True


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
    q_ptr, k_ptr, v_ptr, len_ptr, keep_ptr, tree_ptr, o_ptr, lse_ptr, out_ptr, lse_out_ptr,
    cnt_ptr, sq_b, sq_h, sq_t, sk_b, sk_h, sk_s, sv_b, sv_h, sv_s, skeep_b, stree_b, stree_t,
    so_s, so_b, so_h, so_t, sl_s, sl_b, sl_h, sl_t,
    n_kv_heads, group, n_tokens, n_new, split_len, n_splits, scale,
    HEAD_DIM: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr, HAS_KEEP: tl.constexpr, IN_FLIGHT: tl.constexpr, TREE: tl.constexpr,
    PRECISION: tl.constexpr, SPLIT_BLOCKS: tl.constexpr, DYNAMIC: tl.constexpr,
    STAGES: tl.constexpr, EVEN_D: tl.constexpr, MODE: tl.constexpr, N_SPLITS: tl.constexpr,
    LSE_CHUNK: tl.constexpr, CHUNK: tl.constexpr, MERGE_STAGES: tl.constexpr,
    ROWS_FIRST: tl.constexpr,
):  # fmt: skip
    """One key split of one (row, KV head) tile of query rows; MODE says where the result
    goes (see ``_finish``). Partials o (S, B, Hq, T, D) and lse (S, B, Hq, T) share the
    strides of the final out (B, Hq, T, D) and lse (B, Hq, T) after the split stride.
    Grid (splits, B * Hkv, row blocks), or (row blocks, splits, B * Hkv) if ROWS_FIRST."""
    if ROWS_FIRST:
        mblock, split, bh = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        n_mblocks = tl.num_programs(0)
    else:
        split, bh, mblock = tl.program_id(0), tl.program_id(1), tl.program_id(2)
        n_mblocks = tl.num_programs(2)
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
    end = tl.minimum(start + split_len, length + n_new)  # n_new keys in flight (0: none)
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
        # The masked tail (a block or two) is not pipelined: its buffers would add to the main
        # loop's shared memory and leave room for fewer programs per multiprocessor (H200,
        # 8B shape, 70 tokens at 32k: 140 -> 103 us at 3 stages, tune_kernel_h200_tma*.json).
        for n0 in tl.range(full_end, end, BLOCK_N, num_stages=1):
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
    out = acc / tl.where(seen, l_i, 1.0)[:, None]  # (BM, BD)
    o_off = b * so_b + qh * so_h + t * so_t  # (BM,) row offsets into out (and a split's o)
    l_off = b * sl_b + qh * sl_h + t * sl_t  # (BM,)
    tile = bh * n_mblocks + mblock
    _finish(
        out, lse, o_ptr, lse_ptr, out_ptr, lse_out_ptr, cnt_ptr, o_off, l_off, row_ok, dims,
        d_ok, split, tile, n_splits, so_s, sl_s, BLOCK_M, MODE, N_SPLITS, LSE_CHUNK, CHUNK,
        MERGE_STAGES,
    )  # fmt: skip


@triton.jit
def _store_rows(out_ptr, lse_out_ptr, out, lse, o_off, l_off, row_ok, dims, d_ok):
    """Final out (BM, BD) in out_ptr's dtype and lse (BM,) of a block of query rows."""
    mask = row_ok[:, None] & d_ok[None, :]
    tl.store(out_ptr + o_off[:, None] + dims[None, :], out.to(out_ptr.dtype.element_ty), mask)
    tl.store(lse_out_ptr + l_off, lse, row_ok)


@triton.jit
def _finish(
    out, lse, o_ptr, lse_ptr, out_ptr, lse_out_ptr, cnt_ptr, o_off, l_off, row_ok, dims, d_ok,
    split, tile, n_splits, so_s, sl_s, BLOCK_M: tl.constexpr, MODE: tl.constexpr,
    N_SPLITS: tl.constexpr, LSE_CHUNK: tl.constexpr, CHUNK: tl.constexpr,
    MERGE_STAGES: tl.constexpr,
):  # fmt: skip
    """Where one split's out (BM, BD) and lse (BM,) go, by MODE:

    "direct": the only split, so the final result. "partial": split ``split`` of the
    partials, merged by ``_merge_splits`` later. "fused": the partials too, then a counter
    per tile counts the finished splits; the program that finishes last merges them all,
    writes the final result and resets the counter to 0 for the next launch.
    """
    if MODE == "direct":
        _store_rows(out_ptr, lse_out_ptr, out, lse, o_off, l_off, row_ok, dims, d_ok)
    else:
        mask = row_ok[:, None] & d_ok[None, :]
        tl.store(o_ptr + split * so_s + o_off[:, None] + dims[None, :], out, mask)
        tl.store(lse_ptr + split * sl_s + l_off, lse, row_ok)
        if MODE == "fused":
            # All threads' stores above come before the release of the count (the atomic is
            # issued by one thread); its acquire orders the merge's loads after the other
            # programs' released stores, and .cg reads them from L2, never a stale L1 line.
            tl.debug_barrier()
            done = tl.atomic_add(cnt_ptr + tile, 1, sem="acq_rel", scope="gpu")
            if done == n_splits - 1:  # every other split of this tile is stored
                out, lse = _merge_rows(
                    o_ptr, lse_ptr, o_off, l_off, row_ok, dims, d_ok, n_splits, so_s, sl_s,
                    BLOCK_M, N_SPLITS, LSE_CHUNK, CHUNK, MERGE_STAGES, ".cg",
                )  # fmt: skip
                _store_rows(out_ptr, lse_out_ptr, out, lse, o_off, l_off, row_ok, dims, d_ok)
                tl.store(cnt_ptr + tile, 0)


@triton.jit
def _merge_rows(
    o_ptr, lse_ptr, o_off, l_off, row_ok, dims, d_ok, n_splits, so_s, sl_s,
    BLOCK_M: tl.constexpr, N_SPLITS: tl.constexpr, LSE_CHUNK: tl.constexpr,
    CHUNK: tl.constexpr, STAGES: tl.constexpr, CACHE: tl.constexpr,
):  # fmt: skip
    """Exact merge of the split partials of a block of rows -> out (BM, BD), lse (BM,).

    Split s of row r: lse at lse_ptr + s * sl_s + l_off[r], out at o_ptr + s * so_s +
    o_off[r] + dims. Weights exp(lse - max lse) (0 for splits that saw nothing), summed and
    divided out; rows that saw nothing anywhere get out 0 and lse -inf. The max reads
    LSE_CHUNK splits a step, the sum CHUNK splits, STAGES steps in flight. N_SPLITS > 0 (the
    interpreter) is n_splits as a constant trip count (written inline: the interpreter
    turns every assigned value into a tensor).
    """
    top = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    for s0 in tl.range(0, N_SPLITS if N_SPLITS > 0 else n_splits, LSE_CHUNK):
        splits = s0 + tl.arange(0, LSE_CHUNK)  # (CL,)
        lse_c = _chunk_lse(lse_ptr, splits, n_splits, l_off, row_ok, sl_s, CACHE)  # (CL, BM)
        top = tl.maximum(top, tl.max(lse_c, 0))
    top = tl.where(top == float("-inf"), 0.0, top)  # (BM,)
    total = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, dims.shape[0]), tl.float32)
    for s0 in tl.range(0, N_SPLITS if N_SPLITS > 0 else n_splits, CHUNK, num_stages=STAGES):
        splits = s0 + tl.arange(0, CHUNK)  # (C,)
        w = tl.exp(_chunk_lse(lse_ptr, splits, n_splits, l_off, row_ok, sl_s, CACHE) - top)
        ptrs = o_ptr + splits[:, None, None] * so_s + o_off[None, :, None] + dims[None, None, :]
        ok = (splits < n_splits)[:, None, None] & row_ok[None, :, None] & d_ok[None, None, :]
        parts = tl.load(ptrs, ok, other=0.0, cache_modifier=CACHE)  # (C, BM, BD)
        acc += tl.sum(w[:, :, None] * parts, 0)  # w (C, BM), 0 for splits that saw nothing
        total += tl.sum(w, 0)
    out = acc / tl.where(total > 0, total, 1.0)[:, None]  # (BM, BD)
    return out, tl.where(total > 0, top + tl.log(total), float("-inf"))


@triton.jit
def _chunk_lse(lse_ptr, splits, n_splits, l_off, row_ok, sl_s, CACHE: tl.constexpr):
    """(C, BM) partial lse of splits (C,) of rows l_off (BM,); -inf past the last split."""
    ok = (splits < n_splits)[:, None] & row_ok[None, :]
    ptrs = lse_ptr + splits[:, None] * sl_s + l_off[None, :]
    return tl.load(ptrs, ok, other=float("-inf"), cache_modifier=CACHE)


def _n_splits(n_keys: int, programs_per_split: int, block_n: int, min_blocks: int = 1) -> int:
    """Key splits so that the launch has about TARGET_PROGRAMS programs, each split at
    least ``min_blocks`` key blocks long."""
    wanted = math.ceil(TARGET_PROGRAMS / max(programs_per_split, 1))
    return max(1, min(wanted, math.ceil(n_keys / (block_n * max(min_blocks, 1)))))


_COUNTERS: dict[tuple[torch.device, int], Tensor] = {}


def _tile_counters(device: torch.device, n_tiles: int) -> Tensor:
    """Persistent int32 zeros (at least n_tiles) counting finished splits per tile.

    Invariants: every fused launch leaves its counters at 0 again (the last program of a
    tile resets its own), so no fill kernel runs per call or per CUDA-graph replay. A
    buffer is made once per (device, size class) on the first eager call that needs it and
    never freed, so captured graphs keep valid pointers; a graph must not be the first to
    need a size class (this project always runs a step eagerly before capturing it), and
    is refused if it is. Launches sharing a device's counters must be stream-ordered, never
    concurrent on two streams (an aborted launch would also leave counters set).
    """
    size = max(triton.next_power_of_2(n_tiles), 256)
    counters = _COUNTERS.get((device, size))
    if counters is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("split-merge counters must be made by an eager call before capture")
        counters = _COUNTERS[(device, size)] = torch.zeros(size, dtype=torch.int32, device=device)
    return counters


def _merge_mode(fused_merge: bool | None, n_splits: int, device: torch.device) -> str:
    """Where the splits meet: "direct" (one split, no merge), "fused" (the last program of
    each tile merges) or "partial" (the merge kernel). ``fused_merge`` None: as
    FUSED_MERGE_DEFAULT when compiled on CUDA, the merge kernel under the interpreter."""
    if n_splits == 1:
        return "direct"
    if fused_merge is None:
        fused_merge = FUSED_MERGE_DEFAULT and device.type == "cuda" and not INTERPRET
    return "fused" if fused_merge else "partial"


def _merge_chunks(n_splits: int, block_m: int, block_d: int) -> tuple[int, int]:
    """Splits per step of the in-kernel merge (powers of two): (max pass, sum pass)."""
    lse_chunk = min(triton.next_power_of_2(n_splits), _pow2_floor(MERGE_LSE_TILE // block_m))
    return lse_chunk, _pow2_floor(MERGE_TILE // (block_m * block_d))


def _pow2_floor(n: int) -> int:
    """The largest power of two <= n, at least 1."""
    return 1 << (max(n, 1).bit_length() - 1)


def split_attention_lse(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    lengths: Tensor,
    keep: Tensor | None = None,
    in_flight: bool = False,
    tree_mask: Tensor | None = None,
    out_dtype: torch.dtype = torch.float32,
    fused_merge: bool | None = None,
) -> tuple[Tensor, Tensor]:
    """Attention of q (B, Hq, T, D) over buffers k/v (B, Hkv, S, D).

    Row b sees the cached slots below lengths[b] (B,), hidden further where keep (B, S) is
    False. With ``in_flight`` the T query tokens' own keys sit at slots lengths[b] + i and
    are seen causally; or, with tree_mask (B, T, N), N keys in flight sit at slots
    lengths[b] + i (i < N; a draft level's pending nodes, its own among them) and query t
    sees key i where tree_mask[b, t, i]. Returns out (B, Hq, T, D) in
    ``out_dtype`` and lse (B, Hq, T) float32 (-inf, and out 0, where nothing is seen).
    ``fused_merge``: the splits are merged inside the kernel by the last program of each
    tile (no merge kernel; see ``_tile_counters`` for the counters' invariants) instead of
    by ``_merge_splits``; None means FUSED_MERGE_DEFAULT when compiled on CUDA, else off.
    The launch depends only on tensor shapes, so it can be captured in a CUDA graph.
    """
    batch, n_heads, n_tokens, head_dim = q.shape
    n_kv, n_keys = k.shape[1], k.shape[2]
    group = n_heads // n_kv
    n_new = 0 if not in_flight else n_tokens if tree_mask is None else tree_mask.shape[2]
    rows = group * n_tokens
    block_m = min(max(triton.next_power_of_2(rows), 16), LAUNCH.max_block_m)
    n_mblocks = math.ceil(rows / block_m)
    block_n = LAUNCH.block_n
    # A block of up to 16 rows is a decode step's (or a small group's): it keeps the short
    # splits that fill the card; more rows (a verification, a draft level) keep longer ones.
    min_blocks = 1 if block_m <= 16 else LAUNCH.min_split_blocks
    n_splits = _n_splits(n_keys, batch * n_kv * n_mblocks, block_n, min_blocks)
    split_len = math.ceil(math.ceil(n_keys / n_splits) / block_n) * block_n
    mode = _merge_mode(fused_merge, n_splits, q.device)
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out, lse, o_part, lse_part = _outputs(q, out_dtype, n_splits if mode != "direct" else 0)
    fused = mode == "fused"
    counters = _tile_counters(q.device, batch * n_kv * n_mblocks) if fused else lengths
    keep_arg = keep.contiguous().view(torch.uint8) if keep is not None else lengths
    tree_arg = tree_mask.contiguous().view(torch.uint8) if tree_mask is not None else lengths
    grid = (n_splits, batch * n_kv, n_mblocks)
    if LAUNCH.rows_first:
        grid = (n_mblocks, n_splits, batch * n_kv)
    chunks = _merge_chunks(n_splits, block_m, _block_d(head_dim)) if fused else (1, 1)
    _split_attention[grid](
        q, k, v, lengths, keep_arg, tree_arg, o_part, lse_part, out, lse, counters,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), keep_arg.stride(0) if keep is not None else 0,
        tree_arg.stride(0) if tree_mask is not None else 0,
        tree_arg.stride(1) if tree_mask is not None else 0,
        o_part.stride(0), *out.stride()[:3], lse_part.stride(0), *lse.stride(),
        n_kv, group, n_tokens, n_new, split_len, n_splits, head_dim**-0.5 * LOG2E,
        HEAD_DIM=head_dim, BLOCK_D=_block_d(head_dim), BLOCK_M=block_m,
        BLOCK_N=block_n, HAS_KEEP=keep is not None, IN_FLIGHT=in_flight,
        TREE=tree_mask is not None, PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        # compiled kernels loop dynamically: a constant 0 keeps one binary for all lengths
        SPLIT_BLOCKS=split_len // block_n if INTERPRET else 0, DYNAMIC=not INTERPRET,
        STAGES=LAUNCH.step_stages if block_m <= 16 else LAUNCH.stages,
        EVEN_D=head_dim == _block_d(head_dim), MODE=mode,
        N_SPLITS=n_splits if INTERPRET else 0, LSE_CHUNK=chunks[0], CHUNK=chunks[1],
        MERGE_STAGES=MERGE_STAGES, ROWS_FIRST=LAUNCH.rows_first, num_warps=LAUNCH.num_warps,
    )  # fmt: skip
    if mode == "partial":
        _merge_into(o_part, lse_part, out, lse)
    return out, lse


def _outputs(q: Tensor, out_dtype: torch.dtype, n_splits: int) -> tuple[Tensor, ...]:
    """out (B, Hq, T, D) out_dtype, lse (B, Hq, T), and float32 partials o (S, B, Hq, T, D),
    lse (S, B, Hq, T) for n_splits > 0, else views of out and lse with S = 1.

    All are stored token-major, (B, T, Hq[, D]) per split, and returned as transposed
    views: the (B, T, Hq * D) rows the output projection takes are then a view of out,
    not a copy, and the merge kernel's flat row index still addresses o and lse alike.
    """
    batch, heads, tokens, dim = q.shape

    def token_major(lead: tuple[int, ...], tail: tuple[int, ...], dtype) -> Tensor:
        shape = (*lead, batch, tokens, heads, *tail)  # stored (..., B, T, Hq, ...)
        return q.new_empty(shape, dtype=dtype).transpose(len(lead) + 1, len(lead) + 2)

    out = token_major((), (dim,), out_dtype)  # (B, Hq, T, D) view
    lse = token_major((), (), torch.float32)  # (B, Hq, T) view
    if n_splits == 0:
        return out, lse, out[None], lse[None]
    o_part = token_major((n_splits,), (dim,), torch.float32)  # (S, B, Hq, T, D) view
    return out, lse, o_part, token_major((n_splits,), (), torch.float32)


def _block_d(head_dim: int) -> int:
    return triton.next_power_of_2(max(head_dim, 16))


@triton.jit
def _merge_splits(
    o_ptr, lse_ptr, out_ptr, lse_out_ptr, n_splits, so_s, sl_s,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
    N_SPLITS: tl.constexpr,
):  # fmt: skip
    """One query row: softmax-weighted sum of its split outputs by their LSE, all
    BLOCK_S >= n_splits splits loaded at once."""
    row = tl.program_id(0) + tl.arange(0, 1)  # (1,)
    row_ok = row < tl.num_programs(0)  # (1,) true
    dims = tl.arange(0, BLOCK_D)
    d_ok = dims < HEAD_DIM
    out, lse = _merge_rows(
        o_ptr, lse_ptr, row * HEAD_DIM, row, row_ok, dims, d_ok, n_splits, so_s, sl_s, 1,
        N_SPLITS, BLOCK_S, BLOCK_S, 1, "",
    )  # fmt: skip
    _store_rows(out_ptr, lse_out_ptr, out, lse, row * HEAD_DIM, row, row_ok, dims, d_ok)


def merge_splits(
    o_part: Tensor, lse_part: Tensor, out_dtype: torch.dtype = torch.float32
) -> tuple[Tensor, Tensor]:
    """Exact merge of contiguous per-split partials o (S, B, H, T, D), lse (S, B, H, T)
    into out (B, H, T, D) in ``out_dtype`` and lse (B, H, T) float32."""
    out = o_part.new_empty(o_part.shape[1:], dtype=out_dtype)
    lse = lse_part.new_empty(lse_part.shape[1:])
    _merge_into(o_part, lse_part, out, lse)
    return out, lse


def _merge_into(o_part: Tensor, lse_part: Tensor, out: Tensor, lse: Tensor) -> None:
    """``merge_splits`` into given out (B, H, T, D) and lse (B, H, T). The kernel walks
    flat rows: out, lse and each split's partials must share one memory order of
    (B, H, T), whether contiguous or token-major (``_outputs``)."""
    n_splits, head_dim = o_part.shape[0], o_part.shape[-1]
    _merge_splits[(lse.numel(),)](
        o_part, lse_part, out, lse, n_splits, o_part.stride(0), lse_part.stride(0),
        HEAD_DIM=head_dim, BLOCK_S=triton.next_power_of_2(n_splits), BLOCK_D=_block_d(head_dim),
        N_SPLITS=n_splits if INTERPRET else 0,
    )  # fmt: skip
