"""The Triton kernels of split-KV attention with log-sum-exp (launched by ``split_kernel``).

``_split_attention``: each program owns one key split of one (row, KV head) and a block of
query rows; query rows are the (query-head group, token) pairs that share a KV head, so
grouped-query attention reads every key block once per split (flash-decoding layout).
``Merge`` says where a split's result goes. ``_merge_splits``: the exact merge of the
partials of the splits through their log-sum-exp, one program per query row.
"""

from __future__ import annotations

from enum import IntEnum

import triton
import triton.language as tl

LN2 = tl.constexpr(0.6931471805599453)


class Merge(IntEnum):
    """Where the key splits of a launch meet (the kernel's MODE)."""

    DIRECT = 0  # one split: its program writes the final result, no merge
    PARTIAL = 1  # every split writes its partials; ``_merge_splits`` merges them later
    FUSED = 2  # partials too; the last program of each tile to finish merges them


# The kernels compare MODE with these compile-time constants (module globals a Triton
# kernel reads must be constexpr).
_DIRECT = tl.constexpr(int(Merge.DIRECT))
_FUSED = tl.constexpr(int(Merge.FUSED))


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
def _fold_split(
    start, end, q, length, t, row_ok, dims, d_ok, keep_row, tree_row, stree_t, k_head, v_head,
    sk_s, sv_s, scale, BLOCK_M: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    HAS_KEEP: tl.constexpr, IN_FLIGHT: tl.constexpr, TREE: tl.constexpr,
    PRECISION: tl.constexpr, SPLIT_BLOCKS: tl.constexpr, DYNAMIC: tl.constexpr,
    STAGES: tl.constexpr, EVEN_D: tl.constexpr,
):  # fmt: skip
    """Keys start .. end of one head folded into a fresh running max m_i (BM,), sum l_i
    (BM,) and output acc (BM, BD)."""
    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), tl.float32)
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
    return m_i, l_i, acc


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
    """One key split of one (row, KV head) tile of query rows; MODE (a ``Merge``) says where
    the result goes (see ``_finish``). Partials o (S, B, Hq, T, D) and lse (S, B, Hq, T) share the
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
    keep_row, tree_row = keep_ptr + b * skeep_b, tree_ptr + b * stree_b
    k_head, v_head = k_ptr + b * sk_b + h * sk_h, v_ptr + b * sv_b + h * sv_h
    m_i, l_i, acc = _fold_split(
        start, end, q, length, t, row_ok, dims, d_ok, keep_row, tree_row, stree_t, k_head,
        v_head, sk_s, sv_s, scale, BLOCK_M, BLOCK_D, BLOCK_N, HAS_KEEP, IN_FLIGHT, TREE,
        PRECISION, SPLIT_BLOCKS, DYNAMIC, STAGES, EVEN_D,
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
    """Where one split's out (BM, BD) and lse (BM,) go, by MODE (a ``Merge``):

    DIRECT: the only split, so the final result. PARTIAL: split ``split`` of the partials,
    merged by ``_merge_splits`` later. FUSED: the partials too, then a counter per tile
    counts the finished splits; the program that finishes last merges them all, writes
    the final result and resets the counter to 0 for the next launch.
    """
    if MODE == _DIRECT:
        _store_rows(out_ptr, lse_out_ptr, out, lse, o_off, l_off, row_ok, dims, d_ok)
    else:
        mask = row_ok[:, None] & d_ok[None, :]
        tl.store(o_ptr + split * so_s + o_off[:, None] + dims[None, :], out, mask)
        tl.store(lse_ptr + split * sl_s + l_off, lse, row_ok)
        if MODE == _FUSED:
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
