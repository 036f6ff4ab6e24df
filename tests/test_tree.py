"""Tree shapes, ancestor masks, depths and root paths against brute-force walks."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longspec.tree import (
    TreeShape,
    ancestor_mask,
    best_children,
    grow_level,
    node_depths,
    path_to,
    tree_depth,
)

# ---------------------------------------------------------------------------- helpers


def brute_path(parents: list[int], node: int) -> list[int]:
    """Root-to-node node indices by walking parent links one at a time."""
    out = [node]
    while parents[out[-1]] >= 0:
        out.append(parents[out[-1]])
    return out[::-1]


@st.composite
def level_order_trees(draw, max_levels: int = 4, max_width: int = 4, max_batch: int = 3):
    """(shape, parents (B, N+1)): every node's parent is a random node of the level above,
    drawn independently per row (rows share the shape, not the links)."""
    levels = draw(st.lists(st.integers(1, max_width), min_size=0, max_size=max_levels))
    batch = draw(st.integers(1, max_batch))
    shape = TreeShape(levels)
    rows = []
    for _ in range(batch):
        row, above = [-1], range(0, 1)
        for sl in shape.level_slices:
            row += [draw(st.sampled_from(above)) for _ in range(sl.start, sl.stop)]
            above = range(sl.start, sl.stop)
        rows.append(row)
    return shape, torch.tensor(rows, dtype=torch.long)


def chain_parents(gamma: int, batch: int = 1) -> torch.Tensor:
    return (torch.arange(gamma + 1) - 1).expand(batch, -1).clone()  # (B, g+1): -1, 0, 1, ...


# ---------------------------------------------------------------------------- TreeShape


def test_paper_shape_properties():
    shape = TreeShape((4, 16, 16, 16, 16))
    assert shape.num_nodes == 68 and shape.depth == 5
    depths = shape.depths
    assert depths.dtype == torch.long and depths.shape == (69,)
    assert depths[0] == 0 and (depths[1:5] == 1).all() and (depths[-16:] == 5).all()
    assert shape.level_slices == [slice(1, 5), slice(5, 21), slice(21, 37), slice(37, 53)] + [
        slice(53, 69)
    ]


def test_chain_and_vanilla_shapes():
    chain = TreeShape.chain(4)
    assert chain == TreeShape((1, 1, 1, 1)) and chain.num_nodes == chain.depth == 4
    assert chain.depths.tolist() == [0, 1, 2, 3, 4]
    vanilla = TreeShape(())
    assert vanilla.num_nodes == vanilla.depth == 0
    assert vanilla.depths.tolist() == [0] and vanilla.level_slices == []


def test_shape_accepts_int_like_levels_and_is_frozen_and_hashable():
    shape = TreeShape([np.int64(2), 3])
    assert shape.levels == (2, 3) and all(type(w) is int for w in shape.levels)
    assert hash(shape) == hash(TreeShape((2, 3)))
    with pytest.raises(dataclasses.FrozenInstanceError):
        shape.levels = (1,)  # type: ignore[misc]


@pytest.mark.parametrize("bad", [(0,), (4, -1), (2.0,), (True, 2), ("4",), "44", 5, None])
def test_invalid_shapes_raise_naming_tree_shape(bad):
    with pytest.raises(ValueError, match="tree_shape"):
        TreeShape(bad)


def test_check_vocab_rejects_levels_wider_than_their_candidates():
    TreeShape((3, 9)).check_vocab(3)  # 3 <= 1*3, 9 <= 3*3
    with pytest.raises(ValueError, match="tree_shape level 1"):
        TreeShape((4,)).check_vocab(3)
    with pytest.raises(ValueError, match="tree_shape level 2"):
        TreeShape((2, 7)).check_vocab(3)


@given(st.lists(st.integers(1, 6), max_size=6))
@settings(derandomize=True, deadline=None, max_examples=50)
def test_depths_and_slices_agree(levels):
    shape = TreeShape(levels)
    depths = shape.depths
    assert len(depths) == shape.num_nodes + 1
    for level, sl in enumerate(shape.level_slices, start=1):
        assert (depths[sl] == level).all()
    assert sum(sl.stop - sl.start for sl in shape.level_slices) == shape.num_nodes


# ---------------------------------------------------------------------------- masks


@pytest.mark.parametrize("gamma", [0, 1, 4])
def test_chain_mask_is_lower_triangular(gamma):
    parents = chain_parents(gamma, batch=2)
    mask = ancestor_mask(parents)
    lower = torch.ones(gamma + 1, gamma + 1, dtype=torch.bool).tril()
    assert mask.shape == (2, gamma + 1, gamma + 1)
    assert torch.equal(mask, lower.expand(2, -1, -1))
    assert torch.equal(ancestor_mask(parents, gamma), mask)


def test_single_wide_level_mask_is_identity_plus_root_column():
    parents = torch.tensor([[-1, 0, 0, 0, 0]])
    expected = torch.eye(5, dtype=torch.bool)
    expected[:, 0] = True
    assert torch.equal(ancestor_mask(parents)[0], expected)
    assert torch.equal(ancestor_mask(parents, 1)[0], expected)


def test_rows_with_different_links():
    parents = torch.tensor([[-1, 0, 0, 1, 1], [-1, 0, 0, 2, 1]])
    mask = ancestor_mask(parents, 2)
    assert mask[0, 3].tolist() == [True, True, False, True, False]
    assert mask[1, 3].tolist() == [True, False, True, True, False]
    assert mask[1, 4].tolist() == [True, True, False, False, True]


@given(level_order_trees())
@settings(derandomize=True, deadline=None, max_examples=150)
def test_mask_depths_and_paths_match_brute_force(tree):
    shape, parents = tree
    batch, n = parents.shape
    mask = ancestor_mask(parents)
    assert torch.equal(ancestor_mask(parents, shape.depth), mask)  # sync-free variant
    assert torch.equal(node_depths(parents, shape.depth), shape.depths.expand(batch, -1))
    assert torch.equal(node_depths(parents), shape.depths.expand(batch, -1))
    assert tree_depth(parents) == shape.depth
    for b in range(batch):
        links = parents[b].tolist()
        for i in range(n):
            on_path = set(brute_path(links, i))
            assert [j for j in range(n) if mask[b, i, j]] == sorted(on_path)

    # path_to for every node at once (column = batch row x node)
    nodes = torch.arange(n).repeat(batch)  # (B*(N+1),)
    rep = parents.repeat_interleave(n, 0)  # (B*(N+1), N+1)
    path, lengths = path_to(rep, nodes, shape.depth + 1)
    assert path.shape == (batch * n, shape.depth + 1)
    for r in range(batch * n):
        expected = brute_path(rep[r].tolist(), int(nodes[r]))
        assert int(lengths[r]) == len(expected)
        assert path[r].tolist() == expected + [0] * (shape.depth + 1 - len(expected))


def test_path_to_pads_with_zeros_and_allows_extra_columns():
    parents = torch.tensor([[-1, 0, 0, 1, 2, 3]])
    path, lengths = path_to(parents.expand(3, -1), torch.tensor([5, 2, 0]), 6)
    assert path.tolist() == [[0, 1, 3, 5, 0, 0], [0, 2, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0]]
    assert lengths.tolist() == [4, 2, 1]


@settings(max_examples=40, deadline=None)
@given(
    batch=st.integers(1, 3),
    parents=st.integers(1, 6),
    vocab=st.integers(2, 40),
    width=st.integers(1, 16),
    seed=st.integers(0, 2**16),
)
def test_best_children_ranks_like_every_pair(batch, parents, vocab, width, seed):
    """Two-stage top-k (per parent, then over the candidates) picks what one top-k over
    all parent x token pairs of cumulative log-probs picks, with the same values."""
    if parents * vocab < width:
        return
    gen = torch.Generator().manual_seed(seed)
    scores = torch.randn(batch, parents, vocab, generator=gen) * 3  # (B, n, K), no ties
    cum = torch.randn(batch, parents, generator=gen)  # (B, n)
    cols, parent, values = best_children(scores, cum, width)
    every = (cum[:, :, None] + torch.log_softmax(scores, -1)).flatten(1)  # (B, n*K)
    ref = every.topk(width, dim=-1)
    assert torch.allclose(values, ref.values, atol=1e-5)
    assert torch.equal(parent * vocab + cols, ref.indices)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize(
    ("parents", "vocab", "width"),
    [(1, 8192, 4), (4, 8192, 16), (16, 8192, 16), (16, 128256, 16), (4, 32768, 4)],
)
def test_best_children_kernel_on_cuda_matches_the_cpu_ranking(parents, vocab, width):
    gen = torch.Generator().manual_seed(parents)
    scores = torch.randn(2, parents, vocab, generator=gen) * 4  # (B, n, K)
    cum = torch.randn(2, parents, generator=gen)  # (B, n)
    cols, parent, values = best_children(scores.cuda(), cum.cuda(), width)  # the kernel
    ref_cols, ref_parent, ref_values = best_children(scores, cum, width)
    assert torch.allclose(values.cpu(), ref_values, atol=1e-4)
    assert torch.equal(cols.cpu(), ref_cols) and torch.equal(parent.cpu(), ref_parent)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("vocab", [8192, 128256])
def test_grow_level_on_cuda_matches_the_cpu_path(vocab):
    """A [4, 16, 16] tree grown on the kernel: tokens, parents, log-probs and mask as on CPU."""
    gen = torch.Generator().manual_seed(vocab)
    ids = torch.randperm(200000, generator=gen)[:vocab]
    n_all, batch = 37, 2
    trees = {d: torch.eye(n_all, dtype=torch.bool).expand(batch, -1, -1).clone().to(d)
             for d in ("cpu", "cuda")}  # fmt: skip
    cum = {d: torch.zeros(batch, 1, device=d) for d in trees}
    level_start, start, n = 0, 1, 1
    for width in (4, 16, 16):
        scores = torch.randn(batch, n, vocab, generator=gen) * 4  # (B, n, K)
        out = {
            d: grow_level(scores.to(d), cum[d], width, ids.to(d), trees[d], level_start, start)
            for d in trees
        }
        assert torch.equal(out["cuda"][0].cpu(), out["cpu"][0])
        assert torch.equal(out["cuda"][1].cpu(), out["cpu"][1])
        assert torch.allclose(out["cuda"][2].cpu(), out["cpu"][2], atol=1e-4)
        cum = {d: out["cpu"][2].to(d) for d in trees}  # one ranking state for both
        level_start, start, n = start, start + width, width
    assert torch.equal(trees["cuda"].cpu(), trees["cpu"])
