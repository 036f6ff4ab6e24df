"""What a strategy proposes for one verification round."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass
class Proposal:
    """A tree of candidate tokens, root first (a chain or a lone root are trees too)."""

    tokens: Tensor  # (B, N+1) root = last committed token, then draft nodes in level order
    parents: Tensor  # (B, N+1) parent node index, -1 for the root
    depths: Tensor  # (B, N+1) depth of each node (root 0)
    mask: Tensor  # (B, N+1, N+1) bool: node i sees node j (ancestor or itself)
    draft_probs: Tensor | None = None  # (B, N, V) q of each sampled chain token, else None
    max_depth: int = 0  # depth of the tree (levels below the root)

    def tensors(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """The tensors that describe the tree (what a captured graph returns)."""
        return self.tokens, self.parents, self.depths, self.mask
