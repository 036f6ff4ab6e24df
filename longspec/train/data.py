"""Training and evaluation sequences from the Python standard library (pycode split).

Train sequences come ONLY from ``split_files("train")`` (and optionally from text the
target generates from train prompts, see ``longspec.train.selfgen``); eval sequences from
``split_files("eval")``. Each file is preceded by a ``# file: <relpath>`` line as in the
pycode prompts, tokenized once without special tokens; a sequence is the tokenizer's
special prefix (e.g. BOS, or nothing) followed by ``seq_len - len(prefix)`` ids of the
concatenated files.

Determinism: epoch e concatenates the files in the order ``random.Random(seed + e)``
gives, cuts the stream into sequences (so the cut points move every epoch) and visits
them in the order of ``torch.randperm`` seeded with ``seed + e``. The sequence used for
sample b of step s depends only on (seed, s, b): a resumed run sees the same data.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch
from torch import Tensor

from longspec.data.prompts import special_prefix
from longspec.data.pycode import headed_source, split_files, stdlib_root

log = logging.getLogger(__name__)


def tokenize_split(
    tokenizer, split: str, root: str | Path | None = None, max_files: int | None = None
) -> tuple[list[str], list[Tensor]]:
    """(relpaths, ids per file) of a pycode split, sorted by path; max_files keeps the first."""
    base = Path(root) if root is not None else stdlib_root()
    files = split_files(split, base)[: max_files or None]
    if not files:
        raise ValueError(f"no {split} files under {base}")
    texts = [headed_source(p, base) for p in files]
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
    rel = [p.relative_to(base).as_posix() for p in files]
    return rel, [torch.tensor(x, dtype=torch.long) for x in ids]


def pack(pieces: list[Tensor], seq_len: int, prefix: list[int]) -> Tensor:
    """(N, seq_len): prefix + consecutive windows of the concatenated pieces (tail dropped)."""
    body = seq_len - len(prefix)
    if body < 1:
        raise ValueError(f"train.seq_len={seq_len} leaves no room after the special prefix")
    stream = torch.cat(pieces)
    n = stream.numel() // body
    if n == 0:
        raise ValueError(f"corpus of {stream.numel()} tokens is shorter than one sequence")
    rows = stream[: n * body].view(n, body)
    head = torch.tensor(prefix, dtype=torch.long).expand(n, -1)
    return torch.cat([head, rows], 1)


class TrainData:
    """Deterministic batches of packed train-split sequences (+ optional extra sequences)."""

    def __init__(
        self,
        pieces: list[Tensor],
        seq_len: int,
        prefix: list[int],
        seed: int,
        extra: Tensor | None = None,
    ):
        self.pieces = pieces
        self.seq_len = seq_len
        self.prefix = prefix
        self.seed = seed
        self.extra = extra  # (M, seq_len) sequences mixed into every epoch, or None
        self._epochs: dict[int, Tensor] = {}
        self.per_epoch = self._epoch(0).shape[0]

    @property
    def n_tokens(self) -> int:
        """Tokens of one epoch."""
        return self.per_epoch * self.seq_len

    def _epoch(self, e: int) -> Tensor:
        if e not in self._epochs:
            order = list(range(len(self.pieces)))
            random.Random(self.seed + e).shuffle(order)
            seqs = pack([self.pieces[i] for i in order], self.seq_len, self.prefix)
            if self.extra is not None and len(self.extra):
                seqs = torch.cat([seqs, self.extra])
            gen = torch.Generator().manual_seed(self.seed + e)
            self._epochs[e] = seqs[torch.randperm(seqs.shape[0], generator=gen)]
            if len(self._epochs) > 2:
                self._epochs.pop(min(self._epochs))
        return self._epochs[e]

    def batch(self, step: int, batch_size: int) -> Tensor:
        """(batch_size, seq_len) ids of optimizer step ``step`` (0-based)."""
        rows = []
        for b in range(batch_size):
            g = step * batch_size + b
            rows.append(self._epoch(g // self.per_epoch)[g % self.per_epoch])
        return torch.stack(rows)


def eval_sequences(
    tokenizer, seq_len: int, n: int, seed: int, root=None, max_files: int | None = None
) -> Tensor:
    """(n', seq_len) packed eval-split sequences, n' = min(n, what the split holds)."""
    _, pieces = tokenize_split(tokenizer, "eval", root, max_files)
    order = list(range(len(pieces)))
    random.Random(seed).shuffle(order)
    seqs = pack([pieces[i] for i in order], seq_len, special_prefix(tokenizer))
    return seqs[:n]
