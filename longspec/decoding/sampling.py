"""Generation settings and turning target logits into tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from longspec.verify import sampling_probs


@dataclass(frozen=True)
class Generation:
    """What to generate: budget, sampling, stop tokens."""

    max_new_tokens: int
    eos_ids: tuple[int, ...]
    temperature: float = 0.0  # 0 = greedy
    top_p: float = 1.0
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    def probs(self, logits: Tensor) -> Tensor:
        """(..., V) logits -> the distribution tokens are drawn from (temperature, top-p)."""
        return sampling_probs(logits, self.temperature, self.top_p)

    def pick(self, logits: Tensor, generator: torch.Generator | None) -> Tensor:
        """(B, V) logits -> (B,) tokens: argmax when greedy, else a sample."""
        if self.greedy:
            return logits.argmax(-1)
        return torch.multinomial(self.probs(logits), 1, generator=generator)[:, 0]
