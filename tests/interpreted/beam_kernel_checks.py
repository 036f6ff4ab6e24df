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


def test_ties_go_to_the_lowest_index():
    scores = torch.zeros(1, 2, 8)  # every pair equal
    cols, parent, _ = best_children_kernel(scores, torch.zeros(1, 2), 3, 3)
    assert parent.tolist() == [[0, 0, 0]] and cols.tolist() == [[0, 1, 2]]
