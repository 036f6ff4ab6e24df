"""Greedy acceptance (``longspec.verify.accept_greedy`` with the tree's ancestry) as two
Triton kernels instead of ~30 small torch launches.

On an H200 a whole greedy accept of a 70-node SmolLM2 tree was ~30 launches of 1-12 us
(``experiments/results/profile_rounds_smollm2_4k_h200_draft_kernel.json``); torch's
argmax alone took 12.5 us for 70 rows of 49152 logits and 28 us for one row of 128256,
because a row is reduced by one block. Here:

* ``_chunk_argmax``: one program per (node row, chunk of ``CHUNK`` columns) keeps the
  chunk's largest logit and its first column.
* ``_accept_tree``: one program per batch row joins the chunks into the target's choice
  after every node (the lowest column among equal largest logits, as torch's argmax
  picks), marks the nodes whose token is their parent's choice, keeps those whose every
  ancestor matches too (one reduction over the ancestor mask), and writes the deepest
  such node's root path (ties: lowest index), its depth and the choice after it.

The outputs equal the torch rule's exactly (tests/interpreted/accept_kernel_checks.py)
for finite logits. Where a row holds NaN the two may pick another bonus token; such a
round is stopped anyway (the decode loop's finite check raises NonFiniteLogits).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from longspec.verify import Acceptance

# Logits of one ``_chunk_argmax`` program; 8192 with 4 warps for ``_accept_tree`` was the
# fastest on the H200 for 49152 and 128256 logits (``accept_probe_h200.json``: 12.8 and
# 15.1 us a 70-node accept in a graph, torch's rule 54.1 and 74.0 us).
CHUNK = 8192
MAX_NODES = 256  # a tree up to this many nodes (root included) fits one program
ACCEPT_WARPS = 4  # warps of the one ``_accept_tree`` program a row


@triton.jit
def _chunk_argmax(
    x_ptr, val_ptr, col_ptr, n_nodes, n_cols, n_chunks, stride_b, stride_n,
    CHUNK: tl.constexpr,
):  # fmt: skip
    """Node row r = program 0 (batch r // n_nodes), chunk c = program 1: the chunk's
    largest logit (float32) and its first column."""
    r, c = tl.program_id(0), tl.program_id(1)
    row = (r // n_nodes).to(tl.int64) * stride_b + (r % n_nodes).to(tl.int64) * stride_n
    cols = c * CHUNK + tl.arange(0, CHUNK)
    x = tl.load(x_ptr + row + cols, cols < n_cols, other=float("-inf")).to(tl.float32)
    top, where = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
    tl.store(val_ptr + r * n_chunks + c, top)
    tl.store(col_ptr + r * n_chunks + c, c * CHUNK + where)


@triton.jit
def _accept_tree(
    val_ptr, col_ptr, tok_ptr, par_ptr, dep_ptr, mask_ptr, path_ptr, n_acc_ptr, bonus_ptr,
    n_nodes, n_chunks, path_len,
    BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr, BLOCK_P: tl.constexpr,
):  # fmt: skip
    """Batch row b = program 0: the greedy acceptance of its tree."""
    b = tl.program_id(0)
    nodes = tl.arange(0, BLOCK_N)
    n_ok = nodes < n_nodes
    # The target's choice after each node: the lowest column among the chunks' maxima.
    chunks = tl.arange(0, BLOCK_C)
    at = (b * n_nodes + nodes[:, None]) * n_chunks + chunks[None, :]  # (BN, BC)
    in_grid = n_ok[:, None] & (chunks[None, :] < n_chunks)
    vals = tl.load(val_ptr + at, in_grid, other=float("-inf"))  # (BN, BC)
    cols = tl.load(col_ptr + at, in_grid, other=2147483647)
    top = tl.max(vals, 1)  # (BN,)
    best = tl.min(tl.where(vals == top[:, None], cols, 2147483647), 1)  # (BN,)
    # Node i matches when its token is its parent's choice (the root always does).
    base = b * n_nodes
    tokens = tl.load(tok_ptr + base + nodes, n_ok, other=-1)  # (BN,)
    parents = tl.load(par_ptr + base + nodes, n_ok, other=-1)
    depths = tl.load(dep_ptr + base + nodes, n_ok, other=0)
    pick = parents[:, None] == nodes[None, :]  # (BN, BN) column j is node i's parent
    parent_choice = tl.sum(tl.where(pick, best[None, :], 0), 1)  # (BN,)
    match = (tokens == parent_choice) | (nodes == 0)
    # Accepted: the node and every ancestor match (the mask row: ancestors and itself).
    rows = (b * n_nodes + nodes[:, None]).to(tl.int64) * n_nodes + nodes[None, :]
    seen = tl.load(mask_ptr + rows, n_ok[:, None] & n_ok[None, :], other=0) != 0  # (BN, BN)
    bad = seen & (match[None, :] == 0)
    ok = (tl.max(bad.to(tl.int32), 1) == 0) & n_ok  # (BN,)
    score = tl.where(ok, depths * n_nodes - nodes, -1)  # deeper first, then lower index
    node = tl.argmax(score, 0, tie_break_left=True)
    is_node = nodes == node
    depth = tl.sum(tl.where(is_node, depths, 0), 0)
    # Its root path: the ancestor at each depth (its mask row, one node per level).
    line = tl.load(mask_ptr + (b * n_nodes + node).to(tl.int64) * n_nodes + nodes, n_ok, other=0)
    slots = tl.arange(0, BLOCK_P)
    on_path = (line[None, :] != 0) & (depths[None, :] == slots[:, None])  # (BP, BN)
    path = tl.sum(tl.where(on_path, nodes[None, :], 0), 1)  # (BP,) 0 past the node's depth
    tl.store(path_ptr + b * path_len + slots, path.to(tl.int64), slots < path_len)
    tl.store(n_acc_ptr + b, depth.to(tl.int64))
    tl.store(bonus_ptr + b, tl.sum(tl.where(is_node, best, 0), 0).to(tl.int64))


def accept_greedy_kernel(
    tokens: Tensor, parents: Tensor, logits: Tensor, mask: Tensor, depths: Tensor, max_depth: int
) -> Acceptance:
    """``accept_greedy`` of tokens, parents, depths (B, N+1), logits (B, N+1, V) and the
    ancestor mask (B, N+1, N+1) (node i sees its ancestors and itself), on the kernels."""
    batch, n_nodes, n_cols = logits.shape
    if n_nodes > MAX_NODES:
        raise ValueError(f"the accept kernel takes up to {MAX_NODES} nodes, got {n_nodes}")
    if logits.stride(2) != 1:
        logits = logits.contiguous()
    n_chunks = triton.cdiv(n_cols, CHUNK)
    vals = torch.empty(batch * n_nodes, n_chunks, dtype=torch.float32, device=logits.device)
    cols = torch.empty(batch * n_nodes, n_chunks, dtype=torch.int32, device=logits.device)
    _chunk_argmax[(batch * n_nodes, n_chunks)](
        logits, vals, cols, n_nodes, n_cols, n_chunks, logits.stride(0), logits.stride(1),
        CHUNK=CHUNK, num_warps=8,
    )  # fmt: skip
    path_len = max_depth + 1
    path = torch.empty(batch, path_len, dtype=torch.long, device=logits.device)
    n_acc = torch.empty(batch, dtype=torch.long, device=logits.device)
    bonus = torch.empty_like(n_acc)
    _accept_tree[(batch,)](
        vals, cols, tokens.contiguous(), parents.contiguous(), depths.contiguous(),
        mask.contiguous().view(torch.uint8), path, n_acc, bonus, n_nodes, n_chunks, path_len,
        BLOCK_N=triton.next_power_of_2(n_nodes), BLOCK_C=triton.next_power_of_2(n_chunks),
        BLOCK_P=triton.next_power_of_2(path_len), num_warps=ACCEPT_WARPS,
    )  # fmt: skip
    return Acceptance(path, n_acc, bonus)
