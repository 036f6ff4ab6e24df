"""Per-batch decoding state shared by the loop and the strategies."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from longspec.cache import KVCache
from longspec.decoding.sampling import Generation


@dataclass
class RowResult:
    """What one prompt produced."""

    output_ids: list[int]
    target_forwards: int
    accept_lengths: list[int]  # tokens committed per verification round (accepted + 1)

    @property
    def new_tokens(self) -> int:
        return len(self.output_ids)

    @property
    def tau(self) -> float:
        return self.new_tokens / max(self.target_forwards, 1)


@dataclass
class DecodeState:
    """Caches, the current root token of each row and what each row has produced."""

    cache: KVCache
    gen: Generation
    root: Tensor  # (B,) last committed token (its KV is not in the cache yet)
    generator: torch.Generator | None
    rows: list[RowResult] = field(default_factory=list)
    done: Tensor | None = None  # (B,) bool

    @property
    def batch(self) -> int:
        return self.root.shape[0]

    def active(self) -> Tensor:
        assert self.done is not None
        return ~self.done

    def append(self, b: int, tokens: list[int]) -> None:
        """Give row b its newly committed tokens, stopping at EOS or at the budget."""
        row = self.rows[b]
        for tok in tokens:
            if len(row.output_ids) >= self.gen.max_new_tokens:
                break
            row.output_ids.append(tok)
            if tok in self.gen.eos_ids:
                break
        finished = len(row.output_ids) >= self.gen.max_new_tokens or (
            bool(row.output_ids) and row.output_ids[-1] in self.gen.eos_ids
        )
        if finished:
            self.done[b] = True
