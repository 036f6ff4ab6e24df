"""Tree shapes as data: levels, depths, and ancestor masks of proposal trees."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TreeShape:
    """Nodes per level of a proposal tree (the root, level 0, is not counted)."""

    levels: tuple[int, ...]

    def __init__(self, levels: Sequence[int]):
        levels = tuple(levels)
        for width in levels:
            if isinstance(width, bool) or not isinstance(width, int) or width <= 0:
                raise ValueError(f"tree_shape levels must be positive integers, got {list(levels)}")
        object.__setattr__(self, "levels", levels)

    @property
    def num_nodes(self) -> int:
        return sum(self.levels)

    @property
    def depth(self) -> int:
        return len(self.levels)

    @property
    def depths(self) -> Tensor:
        """(N+1,) depth of each node in level order, root first."""
        per_level = [torch.zeros(1, dtype=torch.long)]
        per_level += [torch.full((w,), d + 1, dtype=torch.long) for d, w in enumerate(self.levels)]
        return torch.cat(per_level)

    @property
    def level_slices(self) -> list[slice]:
        """Node index range of each level (level 1 starts at node 1)."""
        out, start = [], 1
        for width in self.levels:
            out.append(slice(start, start + width))
            start += width
        return out


def ancestor_mask(parents: Tensor, depth: int | None = None) -> Tensor:
    """(B, N+1) parents (-1 at the root) -> (B, N+1, N+1) bool: j is i or an ancestor of i.

    With ``depth`` (the tree's depth) the walk takes exactly that many hops and never
    synchronises with the device, so it can be captured in a CUDA graph.
    """
    batch, n = parents.shape
    eye = torch.eye(n, dtype=torch.bool, device=parents.device)
    mask = eye.expand(batch, -1, -1).clone()  # (B, N+1, N+1)
    hop = parents.clone()  # (B, N+1) current ancestor of every node, -1 past the root
    hops = range(depth) if depth is not None else iter(lambda: bool((hop >= 0).any()), False)
    for _ in hops:
        # one-hot row of each node's current ancestor; -1 (past the root) matches nothing
        onehot = hop[:, :, None] == torch.arange(n, device=parents.device)  # (B, N+1, N+1)
        mask |= onehot
        hop = torch.where(hop >= 0, parents.gather(1, hop.clamp_min(0)), hop)
    return mask
