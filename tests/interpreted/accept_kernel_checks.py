"""Checks of the greedy acceptance kernels, run by test_split_kernel.py under
TRITON_INTERPRET=1 (the interpreter must be chosen before triton compiles anything)."""

import os

import pytest
import torch

from longspec.decoding import accept_kernel
from longspec.decoding.accept_kernel import accept_greedy_kernel
from longspec.tree import ancestor_mask, node_depths
from longspec.verify import accept_greedy

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_split_kernel.py"


def _random_tree(batch: int, levels: list[int], gen: torch.Generator) -> torch.Tensor:
    """(B, N+1) parents in level order: each node hangs from a random node of the level
    above (rows differ)."""
    rows = []
    for _ in range(batch):
        parents, start, width = [-1], 0, 1
        for size in levels:
            picks = torch.randint(width, (size,), generator=gen)
            parents += [start + int(p) for p in picks]
            start, width = start + width, size
        rows.append(parents)
    return torch.tensor(rows)


def _planted(parents: torch.Tensor, vocab: int, gen: torch.Generator, dtype: torch.dtype):
    """Tokens (B, N+1) and logits (B, N+1, V) of small integers (many exactly equal
    maxima), with each node's token its parent's argmax half the time: deep accepted
    paths, rejected branches and duplicate siblings all occur."""
    batch, n = parents.shape
    logits = torch.randint(0, 4, (batch, n, vocab), generator=gen).to(dtype)
    choice = logits.argmax(-1)  # (B, N+1)
    tokens = torch.randint(vocab, (batch, n), generator=gen)
    planted = torch.rand(batch, n, generator=gen) < 0.5
    tokens = torch.where(planted, choice.gather(1, parents.clamp_min(0)), tokens)
    return tokens, logits


def _check(parents: torch.Tensor, tokens: torch.Tensor, logits: torch.Tensor) -> None:
    depth = int(node_depths(parents).max())
    mask = ancestor_mask(parents, depth)  # (B, N+1, N+1)
    depths = node_depths(parents, depth)  # (B, N+1)
    got = accept_greedy_kernel(tokens, parents, logits, mask, depths, depth)
    want = accept_greedy(tokens, parents, logits, depth)  # CPU: the torch rule, walking
    assert torch.equal(got.path, want.path)
    assert torch.equal(got.n_accepted, want.n_accepted)
    assert torch.equal(got.bonus, want.bonus)
    assert got.path.dtype == got.n_accepted.dtype == got.bonus.dtype == torch.int64


@pytest.mark.parametrize(
    ("levels", "vocab", "chunk", "dtype"),
    [
        ([4, 16, 16, 16, 16], 9, 4096, torch.float32),
        ([2, 3, 3], 100, 16, torch.float16),  # several chunks, the last one partial
        ([1, 1, 1, 1], 50, 8, torch.bfloat16),  # a chain
        ([5], 3, 4096, torch.float32),  # one level of siblings, a tiny vocabulary
    ],
)
def test_kernel_accepts_like_torch(monkeypatch, levels, vocab, chunk, dtype):
    """Same path, accepted count and bonus as the torch rule, over many random trees,
    with exact ties among the logits (the lowest column wins, across chunks too)."""
    monkeypatch.setattr(accept_kernel, "CHUNK", chunk)
    gen = torch.Generator().manual_seed(vocab + chunk + len(levels))
    for _ in range(6):
        parents = _random_tree(3, levels, gen)
        tokens, logits = _planted(parents, vocab, gen, dtype)
        _check(parents, tokens, logits)


def test_kernel_accepts_deep_paths_and_the_root_alone():
    """A fully matching tree accepts its whole depth; a lone root (vanilla) takes the
    argmax; a non-contiguous slice of logits reads the same."""
    gen = torch.Generator().manual_seed(7)
    parents = _random_tree(2, [2, 2, 2], gen)
    logits = torch.randn(2, parents.shape[1], 30, generator=gen)
    tokens = logits.argmax(-1).gather(1, parents.clamp_min(0))  # every node matches
    _check(parents, tokens, logits)
    depth = node_depths(parents)
    got = accept_greedy_kernel(tokens, parents, logits, ancestor_mask(parents), depth, 3)
    assert got.n_accepted.tolist() == [3, 3]
    root = torch.full((2, 1), -1)
    wide = torch.randn(2, 1, 61, generator=gen)[..., ::2]  # (B, 1, 31), stride 2
    _check(root, torch.zeros(2, 1, dtype=torch.long), wide)


def test_kernel_refuses_trees_past_one_program():
    n = accept_kernel.MAX_NODES + 1
    parents = torch.arange(-1, n - 1)[None]  # (1, n) a chain
    with pytest.raises(ValueError, match="accept kernel"):
        accept_greedy_kernel(
            torch.zeros(1, n, dtype=torch.long), parents, torch.zeros(1, n, 4),
            torch.ones(1, n, n, dtype=torch.bool), torch.zeros(1, n, dtype=torch.long), 1,
        )  # fmt: skip
