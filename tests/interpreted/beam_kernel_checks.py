"""Checks of the beam-level Triton kernels, run by test_split_kernel.py under
TRITON_INTERPRET=1 (the interpreter must be chosen before triton compiles anything)."""

import os

import pytest
import torch

from longspec.decoding.beam_kernel import best_children_kernel
from longspec.tree import best_children

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_split_kernel.py"


@pytest.mark.parametrize(
    ("batch", "parents", "vocab", "width"),
    [(1, 1, 40, 4), (2, 4, 300, 16), (1, 16, 1000, 16), (3, 5, 7, 12), (1, 2, 64, 1)],
)
def test_kernel_ranks_like_torch(batch, parents, vocab, width):
    """Same values, columns and parents as the torch ranking (which is itself tested
    against one top-k over every parent x token pair)."""
    gen = torch.Generator().manual_seed(batch * 100 + parents * 10 + width)
    scores = torch.randn(batch, parents, vocab, generator=gen) * 4  # (B, n, K), no ties
    cum = torch.randn(batch, parents, generator=gen)  # (B, n)
    per = min(width, vocab)
    cols, parent, values = best_children_kernel(scores, cum, width, per)
    ref_cols, ref_parent, ref_values = best_children(scores, cum, width)  # CPU: torch
    assert torch.allclose(values, ref_values, atol=1e-5)
    assert torch.equal(cols, ref_cols) and torch.equal(parent, ref_parent)
    assert cols.dtype == parent.dtype == torch.int64


@pytest.mark.parametrize(
    ("batch", "parents", "vocab", "width", "chunk"),
    [(2, 4, 300, 16, 64), (1, 3, 1000, 5, 16), (3, 5, 7, 12, 16), (1, 2, 130, 1, 128)],
)
def test_chunked_kernels_rank_like_torch(batch, parents, vocab, width, chunk):
    """Wide vocabularies go through chunks (here small ones, the last one partial): the
    chunks' log-sum-exps and candidates join into the same ranking."""
    gen = torch.Generator().manual_seed(vocab + width + chunk)
    scores = torch.randn(batch, parents, vocab, generator=gen) * 4  # (B, n, K)
    cum = torch.randn(batch, parents, generator=gen)
    cols, parent, values = best_children_kernel(scores, cum, width, min(width, vocab), chunk)
    ref_cols, ref_parent, ref_values = best_children(scores, cum, width)
    assert torch.allclose(values, ref_values, atol=1e-5)
    assert torch.equal(cols, ref_cols) and torch.equal(parent, ref_parent)


@pytest.mark.parametrize("chunk", [None, 4])
def test_ties_go_to_the_lowest_index(chunk):
    scores = torch.zeros(1, 2, 8)  # every pair equal
    cols, parent, _ = best_children_kernel(scores, torch.zeros(1, 2), 3, 3, chunk)
    assert parent.tolist() == [[0, 0, 0]] and cols.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize(("vocab", "chunk", "with_ids"), [(300, None, True), (1000, 64, False)])
def test_growing_a_tree_level_matches_torch(vocab, chunk, with_ids):
    """A whole tree grown level by level through the kernel (tokens through ids, parents as
    node indices, the ancestor mask filled in place) equals the torch path of grow_level."""
    from longspec.decoding.beam_kernel import Growth
    from longspec.tree import grow_level

    gen = torch.Generator().manual_seed(vocab)
    levels, batch = (3, 5, 4), 2
    n_all = 1 + sum(levels)
    ids = torch.randperm(5000, generator=gen)[:vocab] if with_ids else None
    masks = [torch.eye(n_all, dtype=torch.bool).expand(batch, -1, -1).clone() for _ in "ab"]
    cum = [torch.zeros(batch, 1), torch.zeros(batch, 1)]
    level_start, start, n = 0, 1, 1
    for width in levels:
        scores = torch.randn(batch, n, vocab, generator=gen) * 3  # (B, n, K)
        want = grow_level(scores, cum[0], width, ids, masks[0], level_start, start)  # torch
        per = min(width, vocab)
        grow = Growth(ids, masks[1], level_start, start)
        got = best_children_kernel(scores, cum[1], width, per, chunk, grow=grow)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert torch.allclose(got[2], want[2], atol=1e-5)
        cum = [want[2], got[2]]
        level_start, start, n = start, start + width, width
    assert torch.equal(masks[0], masks[1]) and masks[0].sum() > batch * n_all
