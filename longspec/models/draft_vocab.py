"""A reduced draft vocabulary: the draft scores only the target's most frequent tokens.

The draft's output head is the target's ``lm_head``; on a CPU its (V, hidden) product is
most of a draft step. Scoring only the K most frequent tokens of the training text makes
that product V/K times cheaper. Verification is unchanged, so decoding stays lossless: a
token outside the set is simply never proposed (its draft probability is 0).

The ranking ships beside a draft checkpoint as ``token_counts.json`` (ids by decreasing
count over the draft's training split), written by ``python -m longspec.train.draft_vocab``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from torch import Tensor

from longspec.models import cpu_linear

RANKING_FILE = "token_counts.json"
KEEP_IN_FILE = 32768  # ids stored in the file (the useful sizes are far below)


def count_tokens(sequences: Iterable[Tensor], vocab_size: int) -> Tensor:
    """(V,) long: how often each id occurs in the sequences."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for ids in sequences:
        counts += torch.bincount(ids.flatten(), minlength=vocab_size)[:vocab_size]
    return counts


def save_ranking(directory: Path, counts: Tensor, source: str) -> Path:
    """Write the most frequent ids (count > 0, by decreasing count, ties by id)."""
    order = torch.argsort(-counts, stable=True)  # (V,) by count, ties by id
    kept = order[counts[order] > 0][:KEEP_IN_FILE]
    path = Path(directory) / RANKING_FILE
    body = {
        "source": source,
        "total_tokens": int(counts.sum()),
        "ids": kept.tolist(),
        "counts": counts[kept].tolist(),
    }
    path.write_text(json.dumps(body))
    return path


def load_ranking(directory: Path) -> Tensor | None:
    """Ids by decreasing frequency from a checkpoint dir, or None when it has no ranking."""
    path = Path(directory) / RANKING_FILE
    if not path.is_file():
        return None
    return torch.tensor(json.loads(path.read_text())["ids"], dtype=torch.long)


class DraftHead:
    """Logits over the full vocabulary from the ``ids`` rows of the target's head only;
    every other token gets -inf."""

    def __init__(self, lm_head_weight: Tensor, ids: Tensor):
        self.ids = ids.to(lm_head_weight.device)  # (K,)
        self.weight = lm_head_weight[self.ids].contiguous()  # (K, hidden)
        self.vocab_size = lm_head_weight.shape[0]

    def __call__(self, hidden: Tensor) -> Tensor:
        """(B, T, hidden) -> (B, T, V) float32."""
        return self.expand(self.sub(hidden))

    def sub(self, hidden: Tensor) -> Tensor:
        """(B, T, hidden) -> (B, T, K) float32 logits of the kept tokens (order of ``ids``);
        a few rows on the CPU through the transposed product (``cpu_linear``)."""
        return cpu_linear.product(self.weight, hidden, max_rows=None).float()

    def expand(self, sub: Tensor) -> Tensor:
        """(..., K) kept-token logits -> (..., V): -inf for every other token."""
        full = sub.new_full((*sub.shape[:-1], self.vocab_size), float("-inf"))
        full[..., self.ids] = sub
        return full
