"""Checks of the Triton split-KV kernel, run by test_split_kernel.py under TRITON_INTERPRET=1.

Not collected on their own: the interpreter must be switched on before triton compiles
anything, so these run in a subprocess of their own.
"""

import math
import os

import pytest
import torch

from longspec.attention import split_kernel
from longspec.attention.base import Prefix
from longspec.attention.eager import eager_attention, masked_attention_lse
from longspec.attention.split_kernel import Launch, split_attention_lse
from longspec.attention.triton_hybrid import TritonHybridAttention
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel
from longspec.tree import ancestor_mask

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_split_kernel.py"
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")


def visible(lengths: torch.Tensor, n_keys: int, keep: torch.Tensor | None) -> torch.Tensor:
    """(B, S) bool: keys below each row's length, and kept."""
    vis = torch.arange(n_keys)[None, :] < lengths[:, None]
    return vis if keep is None else vis & keep


@pytest.mark.parametrize("groups", [(4, 4), (6, 2), (8, 1)])
@pytest.mark.parametrize("n_tokens", [1, 5, 20])
@pytest.mark.parametrize("with_keep", [False, True])
@pytest.mark.parametrize("min_split_blocks", [1, Launch().min_split_blocks])
def test_split_kernel_matches_masked_math(
    groups, n_tokens, with_keep, min_split_blocks, monkeypatch
):
    """min_split_blocks 1: many-row blocks split these 200 keys too (the default keeps
    them in one split)."""
    monkeypatch.setattr(split_kernel, "LAUNCH", Launch(min_split_blocks=min_split_blocks))
    gen = torch.Generator().manual_seed(n_tokens * 7 + groups[0])
    hq, hkv = groups
    q = torch.randn(3, hq, n_tokens, 16, generator=gen)
    k, v = torch.randn(2, 3, hkv, 200, 16, generator=gen)
    lengths = torch.tensor([200, 71, 0])
    keep = torch.rand(3, 200, generator=gen) > 0.4 if with_keep else None
    out, lse = split_attention_lse(q, k, v, lengths, keep)
    vis = visible(lengths, 200, keep)[:, None, None, :]  # (B, 1, 1, S)
    ref_out, ref_lse = masked_attention_lse(q, k, v, vis)
    assert (out - ref_out).abs().max() <= 1e-5
    assert torch.equal(lse.isinf(), ref_lse.isinf())
    finite = ref_lse.isfinite()
    assert (lse[finite] - ref_lse[finite]).abs().max() <= 1e-5


def test_split_kernel_causal():
    gen = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 37, 16, generator=gen)
    k, v = torch.randn(2, 2, 2, 37, 16, generator=gen)
    out, lse = split_attention_lse(q, k, v, torch.tensor([0, 0]), in_flight=True)
    causal = torch.ones(37, 37, dtype=torch.bool).tril()
    ref_out, ref_lse = masked_attention_lse(q, k, v, causal)
    assert (out - ref_out).abs().max() <= 1e-5
    assert (lse - ref_lse).abs().max() <= 1e-5


@pytest.mark.parametrize("prefix_len", [1, 130])
@pytest.mark.parametrize("n_new", [1, 9])
def test_triton_hybrid_matches_eager(prefix_len, n_new):
    gen = torch.Generator().manual_seed(prefix_len + n_new)
    q = torch.randn(2, 4, n_new, 16, generator=gen)
    k, v = torch.randn(2, 2, 2, 160, 16, generator=gen)
    kn, vn = torch.randn(2, 2, 2, n_new, 16, generator=gen)
    parents = torch.tensor([[-1] + [i // 2 for i in range(n_new - 1)]] * 2)
    mask = ancestor_mask(parents)  # (B, T, T)
    prefix = Prefix(k, v, torch.tensor([prefix_len, max(prefix_len // 2, 1)]))
    backend = TritonHybridAttention(min_prefix=0)
    for new_mask in (mask, None):
        ref = eager_attention(q, prefix, kn, vn, new_mask)
        assert (backend(q, prefix, kn, vn, new_mask) - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("tree", [False, True])
def test_in_flight_tokens_read_from_the_buffer(tree):
    """Tokens in flight written at slots lengths + i: one pass equals [prefix | new]."""
    gen = torch.Generator().manual_seed(5 + tree)
    n_new, lengths = 7, torch.tensor([90, 3])
    q = torch.randn(2, 4, n_new, 16, generator=gen)
    k, v = torch.randn(2, 2, 2, 128, 16, generator=gen)
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2, 5], [-1, 0, 1, 2, 3, 4, 5]])
    mask = ancestor_mask(parents) if tree else None  # (B, T, T)
    rows = torch.arange(2)[:, None]
    slots = lengths[:, None] + torch.arange(n_new)  # (B, T)
    kn, vn = k[rows, :, slots].transpose(1, 2), v[rows, :, slots].transpose(1, 2)
    ref = eager_attention(q, Prefix(k, v, lengths), kn, vn, mask)
    prefix = Prefix(k, v, lengths, in_flight_cached=True)
    got = TritonHybridAttention(min_prefix=0)(q, prefix, kn, vn, mask)
    assert (got - ref).abs().max() <= 1e-5


@pytest.mark.parametrize("min_split_blocks", [1, 6])
def test_more_keys_in_flight_than_queries(min_split_blocks, monkeypatch):
    """A draft level: its T nodes see, under a (B, T, N) mask, N > T pending keys written
    after the ring (the earlier levels' nodes and their own), and the kept ring slots."""
    monkeypatch.setattr(split_kernel, "LAUNCH", Launch(min_split_blocks=min_split_blocks))
    gen = torch.Generator().manual_seed(11)
    n_q, n_new, ring = 6, 15, torch.tensor([97, 40])
    q = torch.randn(2, 6, n_q, 16, generator=gen)
    k, v = torch.randn(2, 2, 3, 97 + n_new, 16, generator=gen)
    keep = torch.rand(2, 97, generator=gen) > 0.3  # ring slots inside the window
    mask = torch.rand(2, n_q, n_new, generator=gen) > 0.5  # (B, T, N)
    mask[:, :, 0] = True  # every node sees the root
    out, lse = split_attention_lse(q, k, v, ring, keep, True, mask)
    slots = torch.arange(97 + n_new)
    rel = slots[None, :] - ring[:, None]  # (B, S) index among the keys in flight
    cached = visible(ring, 97 + n_new, torch.cat([keep, keep[:, :n_new]], 1))  # (B, S)
    fresh = (rel >= 0) & (rel < n_new)
    by_mask = mask.gather(2, rel.clamp(0, n_new - 1)[:, None, :].expand(-1, n_q, -1))
    vis = cached[:, None, :] | (fresh[:, None, :] & by_mask)  # (B, T, S)
    ref_out, ref_lse = masked_attention_lse(q, k, v, vis[:, None])
    assert (out - ref_out).abs().max() <= 1e-5
    assert (lse - ref_lse).abs().max() <= 1e-5


def test_decoding_with_the_kernel_is_lossless(tiny_llama):
    model, _ = tiny_llama
    target = TargetModel(model, TritonHybridAttention(min_prefix=0), static=True)
    reference = TargetModel(model, eager_attention)
    gen = Generation(max_new_tokens=12, eos_ids=())
    prompts = [torch.randint(3, target.vocab_size, (n,)).tolist() for n in (29, 11)]
    want = [r.output_ids for r in Vanilla().generate(reference, prompts, gen, pad_id=0)]
    draft = random_glide(model.config, 0, target.dtype, target.device)
    for strategy in (Vanilla(), TreeDecoding(draft, (2, 2))):
        got = [r.output_ids for r in strategy.generate(target, prompts, gen, pad_id=0)]
        assert got == want


@pytest.mark.parametrize(
    "launch",
    [
        Launch(),
        Launch(max_block_m=16, block_n=16),
        Launch(block_n=128),
        Launch(max_block_m=16, block_n=16, rows_first=True),
    ],
)
@pytest.mark.parametrize("head_dim", [16, 24])
def test_full_and_boundary_blocks_under_every_launch(launch, head_dim, monkeypatch):
    """Blocks wholly below the length skip the mask; the last ones (partly cached, the
    tokens in flight under a tree mask) keep it. Odd head sizes load with a dims mask."""
    monkeypatch.setattr(split_kernel, "LAUNCH", launch)
    gen = torch.Generator().manual_seed(head_dim)
    n_new, lengths = 6, torch.tensor([300, 64, 0])
    q = torch.randn(3, 4, n_new, head_dim, generator=gen)
    k, v = torch.randn(2, 3, 2, 320, head_dim, generator=gen)
    parents = torch.tensor([[-1, 0, 0, 1, 2, 2]] * 3)
    mask = ancestor_mask(parents)  # (B, T, T)
    out, lse = split_attention_lse(q, k, v, lengths, in_flight=True, tree_mask=mask)
    slots = torch.arange(320)  # (S,)
    rel = slots[None, :] - lengths[:, None]  # (B, S) index among the tokens in flight
    fresh = (rel >= 0) & (rel < n_new)
    tree_vis = mask.gather(2, rel.clamp(0, n_new - 1)[:, None, :].expand(-1, n_new, -1))
    vis = (slots[None, None, :] < lengths[:, None, None]) | (fresh[:, None, :] & tree_vis)
    ref_out, ref_lse = masked_attention_lse(q, k, v, vis[:, None])  # (B, 1, T, S)
    assert (out - ref_out).abs().max() <= 1e-5
    assert (lse - ref_lse).abs().max() <= 1e-5


def fused_and_two_kernel(*args, **kwargs) -> tuple[tuple, tuple]:
    """(out, lse) with the in-kernel merge and with the merge kernel, counters checked 0."""
    fused = split_attention_lse(*args, fused_merge=True, **kwargs)
    assert all(not c.any() for c in split_kernel._COUNTERS.values()), "counters left set"
    return fused, split_attention_lse(*args, fused_merge=False, **kwargs)


def assert_same(got: tuple, want: tuple, tol: float = 1e-6) -> None:
    (out, lse), (ref_out, ref_lse) = got, want
    assert out.dtype == ref_out.dtype and (out.float() - ref_out.float()).abs().max() <= tol
    assert torch.equal(lse.isinf(), ref_lse.isinf())
    finite = ref_lse.isfinite()
    assert (lse[finite] - ref_lse[finite]).abs().max() <= 1e-6


def force_splits(
    monkeypatch, n_splits: int, programs_per_split: int, rows_first: bool = False
) -> list[int]:
    """Launches of n_splits key splits (16-key blocks) whose outputs and partials start as
    NaN (a read before a write shows); returns the split counts actually used."""
    launch = Launch(max_block_m=16, block_n=16, rows_first=rows_first)
    monkeypatch.setattr(split_kernel, "LAUNCH", launch)
    monkeypatch.setattr(split_kernel, "TARGET_PROGRAMS", n_splits * programs_per_split)
    used, n_splits_of, outputs_of = [], split_kernel._n_splits, split_kernel._outputs

    def spy(*args):
        used.append(n_splits_of(*args))
        return used[-1]

    def poisoned(*args):
        buffers = outputs_of(*args)
        for x in buffers:
            x.fill_(float("nan"))
        return buffers

    monkeypatch.setattr(split_kernel, "_n_splits", spy)
    monkeypatch.setattr(split_kernel, "_outputs", poisoned)
    return used


@pytest.mark.parametrize("n_splits", [1, 2, 3, 7, 13])
def test_fused_merge_matches_merge_kernel(n_splits, monkeypatch):
    """Keep mask and a row of length 0 (nothing seen: lse -inf, out 0), several splits."""
    used = force_splits(monkeypatch, n_splits, programs_per_split=3 * 2)  # B * Hkv, 1 m-block
    gen = torch.Generator().manual_seed(n_splits)
    q = torch.randn(3, 4, 3, 16, generator=gen)
    k, v = torch.randn(2, 3, 2, 200, 16, generator=gen)
    lengths = torch.tensor([200, 37, 0])
    keep = torch.rand(3, 200, generator=gen) > 0.3
    fused, ref = fused_and_two_kernel(q, k, v, lengths, keep)
    assert used == [n_splits, n_splits]
    assert_same(fused, ref)
    assert fused[1][2].isinf().all() and not fused[0][2].any()
    want_out, want_lse = masked_attention_lse(q, k, v, visible(lengths, 200, keep)[:, None, None])
    assert (fused[0] - want_out).abs().max() <= 1e-5
    assert (fused[1][:2] - want_lse[:2]).abs().max() <= 1e-5


@pytest.mark.parametrize(
    "n_splits, tree, rows_first",
    [(1, False, False), (4, False, False), (9, False, False)]
    + [(1, True, False), (4, True, False), (9, True, False), (4, True, True)],
)
def test_fused_merge_with_tokens_in_flight(n_splits, tree, rows_first, monkeypatch):
    """In-flight keys (causal or tree mask), several m-blocks (either grid order), out in
    float16."""
    used = force_splits(monkeypatch, n_splits, programs_per_split=2 * 2 * 2, rows_first=rows_first)
    gen = torch.Generator().manual_seed(10 * n_splits + tree)
    n_new, lengths = 6, torch.tensor([130, 0])
    q = torch.randn(2, 8, n_new, 16, generator=gen)  # group 4 x 6 tokens: 2 m-blocks of 16
    k, v = torch.randn(2, 2, 2, 144, 16, generator=gen)
    mask = ancestor_mask(torch.tensor([[-1, 0, 0, 1, 2, 2]] * 2)) if tree else None
    args = (q, k, v, lengths, None, True, mask)
    fused, ref = fused_and_two_kernel(*args)
    assert used == [n_splits, n_splits]
    assert_same(fused, ref)
    fused16, ref16 = fused_and_two_kernel(*args, out_dtype=torch.float16)
    assert_same(fused16, ref16, tol=2e-3)  # float32 results a rounding step of float16 apart


def test_fused_merge_twice_in_a_row_reuses_the_counters(monkeypatch):
    used = force_splits(monkeypatch, 5, programs_per_split=2 * 2)
    gen = torch.Generator().manual_seed(7)
    q = torch.randn(2, 4, 2, 24, generator=gen)
    k, v = torch.randn(2, 2, 2, 100, 24, generator=gen)
    lengths = torch.tensor([100, 50])
    first = split_attention_lse(q, k, v, lengths, fused_merge=True)
    counters = dict(split_kernel._COUNTERS)
    second = split_attention_lse(q, k, v, lengths, fused_merge=True)
    assert used == [5, 5] and split_kernel._COUNTERS.keys() == counters.keys()
    assert all(split_kernel._COUNTERS[key] is c for key, c in counters.items())  # reused
    assert all(not c.any() for c in counters.values())
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert_same(first, split_attention_lse(q, k, v, lengths, fused_merge=False))


@pytest.mark.parametrize("n_tokens,min_blocks", [(1, 1), (70, Launch().min_split_blocks)])
def test_many_row_blocks_hold_min_split_blocks(n_tokens, min_blocks, monkeypatch):
    """A step-sized call (up to 16 query rows a block) aims for TARGET_PROGRAMS programs;
    a many-row call (a verification) gives each split at least min_split_blocks blocks."""
    used, n_splits_of = [], split_kernel._n_splits

    def spy(*args):
        used.append(args)
        return n_splits_of(*args)

    monkeypatch.setattr(split_kernel, "_n_splits", spy)
    gen = torch.Generator().manual_seed(n_tokens)
    q = torch.randn(1, 6, n_tokens, 16, generator=gen)
    k, v = torch.randn(2, 1, 2, 500, 16, generator=gen)
    split_attention_lse(q, k, v, torch.tensor([400]), in_flight=True)
    assert len(used) == 1 and used[0][-1] == min_blocks
    n_keys, block_n = used[0][0], used[0][2]
    assert n_splits_of(*used[0]) <= max(1, math.ceil(n_keys / (block_n * min_blocks)))


# bfloat16 is checked on CUDA only (tests/test_attention.py): the interpreter's bfloat16
# arithmetic is not the hardware's (its tl.dot of bfloat16 tiles returns garbage and its
# float32 -> bfloat16 conversion truncates).
@pytest.mark.parametrize(("dtype", "tol"), [(torch.float16, 2e-3)])
@pytest.mark.parametrize("n_tokens", [1, 20])
def test_half_precision_inputs(dtype, tol, n_tokens):
    """float16 keys, values and queries (what the GPU fast path runs): the output in that
    dtype and the float32 lse match float32 math on the same rounded inputs within the
    dtype's rounding."""
    gen = torch.Generator().manual_seed(n_tokens)
    q = torch.randn(2, 8, n_tokens, 16, generator=gen).to(dtype)
    k, v = torch.randn(2, 2, 2, 150, 16, generator=gen).to(dtype)
    lengths = torch.tensor([150, 37])
    keep = torch.rand(2, 150, generator=gen) > 0.3
    out, lse = split_attention_lse(q, k, v, lengths, keep, out_dtype=dtype)
    vis = visible(lengths, 150, keep)[:, None, None, :]  # (B, 1, 1, S)
    ref_out, ref_lse = masked_attention_lse(q.float(), k.float(), v.float(), vis)
    assert out.dtype == dtype and lse.dtype == torch.float32
    assert (out.float() - ref_out).abs().max() <= tol
    assert (lse - ref_lse).abs().max() <= 1e-2
