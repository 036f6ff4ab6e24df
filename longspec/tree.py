"""Proposal trees as data: shapes, depths, ancestor masks and root-to-node paths.

A proposal tree is stored in level order: node 0 is the root (the last committed token),
then every depth-1 node, then every depth-2 node, ... so a parent's index is always smaller
than its child's. ``parents`` (B, N+1) holds each node's parent index (-1 at the root).
The rows of a batch share the shape (nodes per level) but not necessarily the parent links
(a beam tree picks them at run time).

Every function here is vectorised over the batch and loops only over depth. Given the
tree's depth they never read a value back to the host, so they can run inside a captured
CUDA graph.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor


def _check_levels(levels: Iterable[int]) -> tuple[int, ...]:
    """Positive integer widths, or a ValueError that names ``tree_shape``."""
    if isinstance(levels, str | bytes) or not isinstance(levels, Iterable):
        raise ValueError(f"tree_shape must be a sequence of positive integers, got {levels!r}")
    out = []
    for width in levels:
        try:
            if isinstance(width, bool):
                raise TypeError
            value = operator.index(width)  # ints, numpy ints, integer 0-d tensors
        except TypeError:
            raise ValueError(
                f"tree_shape levels must be positive integers, got {width!r} in {levels!r}"
            ) from None
        if value <= 0:
            raise ValueError(f"tree_shape levels must be positive integers, got {list(levels)}")
        out.append(value)
    return tuple(out)


@dataclass(frozen=True)
class TreeShape:
    """Nodes per level of a proposal tree; the root (level 0) is not counted.

    ``(4, 16, 16, 16, 16)`` is the paper's beam tree, ``(1,) * gamma`` a chain of gamma
    draft tokens, ``()`` vanilla decoding (the root alone).
    """

    levels: tuple[int, ...]

    def __init__(self, levels: Iterable[int] = ()):
        object.__setattr__(self, "levels", _check_levels(levels))

    @classmethod
    def chain(cls, gamma: int) -> TreeShape:
        """A chain of ``gamma`` draft tokens."""
        return cls((1,) * gamma)

    @property
    def num_nodes(self) -> int:
        """N: draft nodes, root excluded."""
        return sum(self.levels)

    @property
    def depth(self) -> int:
        """Levels below the root (the most draft tokens one round can accept)."""
        return len(self.levels)

    @property
    def depths(self) -> Tensor:
        """(N+1,) long: depth of each node in level order, root (depth 0) first."""
        widths = torch.tensor((1, *self.levels), dtype=torch.long)  # (depth+1,)
        return torch.repeat_interleave(torch.arange(self.depth + 1), widths)

    @property
    def level_slices(self) -> list[slice]:
        """Node index range of each level below the root (level 1 starts at node 1)."""
        out, start = [], 1
        for width in self.levels:
            out.append(slice(start, start + width))
            start += width
        return out

    def check_vocab(self, vocab_size: int) -> None:
        """A beam tree level of k_l nodes needs k_l <= k_(l-1) * V (parent, token) pairs."""
        above = 1
        for level, width in enumerate(self.levels, start=1):
            if width > above * vocab_size:
                raise ValueError(
                    f"tree_shape level {level} has {width} nodes but only {above} parents x "
                    f"{vocab_size} tokens = {above * vocab_size} candidates"
                )
            above = width


def _walking(hop: Tensor, step: int, depth: int | None) -> bool:
    """Whether the ancestor walk takes hop number ``step``: exactly ``depth`` hops when the
    depth is known (no host read), else until every walk has passed the root."""
    if depth is not None:
        return step < depth
    return step < hop.shape[1] and bool((hop >= 0).any())  # level order: < N+1 hops


def _step_up(parents: Tensor, hop: Tensor) -> Tensor:
    """(B, M) node indices -> their parents; -1 (past the root) stays -1."""
    up = parents.gather(1, hop.clamp_min(0))  # (B, M)
    return torch.where(hop >= 0, up, hop)


def ancestor_mask(parents: Tensor, depth: int | None = None) -> Tensor:
    """(B, N+1) parents -> (B, N+1, N+1) bool: mask[b, i, j] iff j is i or an ancestor of i.

    This is the tree-attention mask (node i sees exactly its own root path). With
    ``depth`` (the tree's depth) the walk takes exactly that many hops and never reads
    back to the host; without it, it walks until every node has passed the root.
    """
    batch, n = parents.shape
    cols = torch.arange(n, device=parents.device)  # (N+1,)
    mask = (cols[:, None] == cols).expand(batch, -1, -1).clone()  # (B, N+1, N+1) identity
    hop = parents.clone()  # (B, N+1) current ancestor of every node, -1 past the root
    step = 0
    while _walking(hop, step, depth):
        mask |= hop[:, :, None] == cols  # one-hot of the ancestor; -1 matches no column
        hop, step = _step_up(parents, hop), step + 1
    return mask


def node_depths(parents: Tensor, depth: int | None = None) -> Tensor:
    """(B, N+1) parents -> (B, N+1) long depth of every node (root 0).

    ``depth`` (the tree's depth, an upper bound is fine) avoids host reads.
    """
    out = torch.zeros_like(parents)  # (B, N+1)
    hop = parents.clone()  # (B, N+1)
    step = 0
    while _walking(hop, step, depth):
        out += (hop >= 0).long()
        hop, step = _step_up(parents, hop), step + 1
    return out


def tree_depth(parents: Tensor) -> int:
    """Depth of the deepest node of any row (reads one value back to the host)."""
    if parents.numel() == 0:
        return 0
    return int(node_depths(parents).max())


def path_to(parents: Tensor, node: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """Root-to-``node`` paths of node indices.

    parents (B, N+1), node (B,) -> path (B, max_len), lengths (B,): row b holds the root
    (column 0), then each ancestor in order down to node[b] at column lengths[b] - 1, then
    0-padding. ``lengths`` is depth(node) + 1. ``max_len`` must exceed every node's depth
    (tree depth + 1 always does); the walk takes max_len - 1 hops and never reads back
    to the host.
    """
    up = [node]  # up[k] = k-th ancestor of node, -1 once past the root
    for _ in range(max_len - 1):
        up.append(_step_up(parents, up[-1][:, None])[:, 0])
    up_t = torch.stack(up, 1)  # (B, max_len)
    depth = (up_t[:, 1:] >= 0).sum(1)  # (B,) hops that stayed inside the tree
    cols = torch.arange(max_len, device=node.device)  # (max_len,)
    back = (depth[:, None] - cols).clamp_min(0)  # (B, max_len): column j holds ancestor d - j
    path = up_t.gather(1, back).clamp_min(0)  # (B, max_len)
    return torch.where(cols <= depth[:, None], path, 0), depth + 1


def path_from_mask(mask: Tensor, node: Tensor, max_len: int) -> tuple[Tensor, Tensor]:
    """``path_to`` read off the ancestor mask (B, N+1, N+1) instead of walking: a node's
    ancestors are its mask row, and in level order they come in increasing index.

    -> path (B, max_len), lengths (B,), as ``path_to`` returns them.
    """
    n = mask.shape[1]
    row = mask.gather(1, node[:, None, None].expand(-1, 1, n))[:, 0]  # (B, N+1)
    cols = torch.arange(n, device=mask.device)  # (N+1,)
    ranked = torch.where(row, cols, n).sort(-1).values[:, :max_len]  # (B, max_len) ancestors
    if ranked.shape[1] < max_len:  # fewer nodes than the path's room (a lone root)
        ranked = torch.nn.functional.pad(ranked, (0, max_len - ranked.shape[1]), value=n)
    return torch.where(ranked < n, ranked, 0), row.sum(1)


def best_children(scores: Tensor, cum: Tensor, width: int) -> tuple[Tensor, Tensor, Tensor]:
    """The ``width`` (parent, token) pairs of highest cumulative draft log-prob.

    scores (B, n, K): draft logits under n parents whose cumulative log-probs are cum
    (B, n). Returns the pairs' score columns, parent indices in 0..n-1 and cumulative
    log-probs, each (B, width). A pair among the best ``width`` of all n*K is among the
    best ``width`` of its parent, so only n * width candidates are ranked: one small top-k
    per parent and one over the candidates instead of one over every pair.
    """
    per = min(width, scores.shape[-1])
    if _on_kernel(scores):
        from longspec.decoding.beam_kernel import best_children_kernel

        return best_children_kernel(scores, cum, width, per)
    lse = torch.logsumexp(scores, -1, keepdim=True)  # (B, n, 1)
    vals, cols = scores.topk(per, dim=-1)  # (B, n, per)
    cand = cum[:, :, None] + (vals - lse)  # (B, n, per) cumulative log-probs
    top = cand.flatten(1).topk(width, dim=-1)  # (B, width) over the n * per candidates
    return cols.flatten(1).gather(1, top.indices), top.indices // per, top.values


def grow_level(
    scores: Tensor,
    cum: Tensor,
    width: int,
    ids: Tensor | None,
    mask: Tensor,
    level_start: int,
    start: int,
) -> tuple[Tensor, Tensor, Tensor]:
    """One beam level joins its tree: :func:`best_children` of scores (B, n, K) under the
    n nodes from ``level_start``, as tokens (``ids[column]``, or the column when ids is
    None), parent node indices and cumulative log-probs, each (B, width); the new nodes'
    rows ``start ..`` of the ancestor mask (B, N+1, N+1), which hold their own bit, get
    their parent's row ORed in (in place). On CUDA one kernel does the ranking's last
    step and all of this."""
    if _on_kernel(scores) and mask.is_contiguous():
        from longspec.decoding.beam_kernel import Growth, best_children_kernel

        per = min(width, scores.shape[-1])
        grow = Growth(ids, mask, level_start, start)
        return best_children_kernel(scores, cum, width, per, grow=grow)
    cols, parent, cum = best_children(scores, cum, width)  # (B, width) each
    parent = level_start + parent
    n_all = mask.shape[-1]
    seen = mask.gather(1, parent[:, :, None].expand(-1, -1, n_all))  # (B, width, N+1)
    mask[:, start : start + width] |= seen
    return (cols if ids is None else ids[cols]), parent, cum


def _on_kernel(scores: Tensor) -> bool:
    """CUDA float32 scores (any vocabulary: wide ones are ranked in chunks)."""
    return scores.is_cuda and scores.dtype == torch.float32
