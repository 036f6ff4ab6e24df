"""Split-KV attention with log-sum-exp, as one Triton kernel (GPU fast path): the launch.

The kernels are in ``split_jit``. Each program owns one key split of one (row, KV head)
and a block of query rows (flash-decoding layout). The partial outputs of the splits are
merged exactly through their log-sum-exp: by a second kernel (``_merge_splits``), or, with
``fused_merge``, by the last program of each tile to finish (split-K with a semaphore: one
int32 counter per tile, see ``_tile_counters``). One split needs no merge: its program
writes the final result.

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
from torch import Tensor

from longspec.attention.split_jit import Merge, _merge_splits, _split_attention

TARGET_PROGRAMS = 512  # enough programs to fill a large GPU several times over
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


def _merge_mode(fused_merge: bool | None, n_splits: int, device: torch.device) -> Merge:
    """Where the splits meet: DIRECT for one split, else FUSED or PARTIAL by
    ``fused_merge``; None: as FUSED_MERGE_DEFAULT when compiled on CUDA, the merge kernel
    under the interpreter."""
    if n_splits == 1:
        return Merge.DIRECT
    if fused_merge is None:
        fused_merge = FUSED_MERGE_DEFAULT and device.type == "cuda" and not INTERPRET
    return Merge.FUSED if fused_merge else Merge.PARTIAL


def _merge_chunks(n_splits: int, block_m: int, block_d: int) -> tuple[int, int]:
    """Splits per step of the in-kernel merge (powers of two): (max pass, sum pass)."""
    lse_chunk = min(triton.next_power_of_2(n_splits), _pow2_floor(MERGE_LSE_TILE // block_m))
    return lse_chunk, _pow2_floor(MERGE_TILE // (block_m * block_d))


def _pow2_floor(n: int) -> int:
    """The largest power of two <= n, at least 1."""
    return 1 << (max(n, 1).bit_length() - 1)


@dataclass(frozen=True)
class _Plan:
    """One launch's geometry: query rows per program, row blocks, key splits, their length
    (a multiple of the key block) and where the splits meet."""

    block_m: int
    n_mblocks: int
    n_splits: int
    split_len: int
    mode: Merge

    def grid(self, heads: int) -> tuple[int, int, int]:
        """(splits, B * Hkv, row blocks), or (row blocks, splits, B * Hkv) rows first."""
        if LAUNCH.rows_first:
            return (self.n_mblocks, self.n_splits, heads)
        return (self.n_splits, heads, self.n_mblocks)


def _plan(
    rows: int, heads: int, n_keys: int, fused_merge: bool | None, device: torch.device
) -> _Plan:
    """The launch of ``rows`` query rows (head group x tokens) per KV head, over ``heads``
    (batch x KV heads) heads of ``n_keys`` key slots each."""
    block_m = min(max(triton.next_power_of_2(rows), 16), LAUNCH.max_block_m)
    n_mblocks = math.ceil(rows / block_m)
    block_n = LAUNCH.block_n
    # A block of up to 16 rows is a decode step's (or a small group's): it keeps the short
    # splits that fill the card; more rows (a verification, a draft level) keep longer ones.
    min_blocks = 1 if block_m <= 16 else LAUNCH.min_split_blocks
    n_splits = _n_splits(n_keys, heads * n_mblocks, block_n, min_blocks)
    split_len = math.ceil(math.ceil(n_keys / n_splits) / block_n) * block_n
    mode = _merge_mode(fused_merge, n_splits, device)
    return _Plan(block_m, n_mblocks, n_splits, split_len, mode)


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
    n_kv = k.shape[1]
    group = n_heads // n_kv
    n_new = 0 if not in_flight else n_tokens if tree_mask is None else tree_mask.shape[2]
    plan = _plan(group * n_tokens, batch * n_kv, k.shape[2], fused_merge, q.device)
    block_m, n_splits, mode = plan.block_m, plan.n_splits, plan.mode
    q, k, v = (x if x.stride(-1) == 1 else x.contiguous() for x in (q, k, v))
    out, lse, o_part, lse_part = _outputs(q, out_dtype, 0 if mode is Merge.DIRECT else n_splits)
    fused = mode is Merge.FUSED
    counters = _tile_counters(q.device, batch * n_kv * plan.n_mblocks) if fused else lengths
    keep_arg = keep.contiguous().view(torch.uint8) if keep is not None else lengths
    tree_arg = tree_mask.contiguous().view(torch.uint8) if tree_mask is not None else lengths
    chunks = _merge_chunks(n_splits, block_m, _block_d(head_dim)) if fused else (1, 1)
    grid, block_n, split_len = plan.grid(batch * n_kv), LAUNCH.block_n, plan.split_len
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
        EVEN_D=head_dim == _block_d(head_dim), MODE=int(mode),
        N_SPLITS=n_splits if INTERPRET else 0, LSE_CHUNK=chunks[0], CHUNK=chunks[1],
        MERGE_STAGES=MERGE_STAGES, ROWS_FIRST=LAUNCH.rows_first, num_warps=LAUNCH.num_warps,
    )  # fmt: skip
    if mode is Merge.PARTIAL:
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
