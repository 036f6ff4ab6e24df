"""Checks of the fused layer kernels, run by test_split_kernel.py under TRITON_INTERPRET=1."""

import copy
import os

import pytest
import torch

from longspec.attention.eager import eager_attention
from longspec.attention.triton_hybrid import TritonHybridAttention
from longspec.cache import DraftCache, KVCache
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models import gemm_rows as gemm_rows_module
from longspec.models.draft import FusedDraft, GlideDraft, shared_position
from longspec.models.fused_kernels import add_rms_norm, rotary_into_cache, silu_mul
from longspec.models.fused_layer import FusedLayers
from longspec.models.gemm_rows import RowsLaunch, few_rows, gemm_rows
from longspec.models.gemv import GemvLaunch, RowNorm, gemv
from longspec.models.glide_io import random_glide
from longspec.models.rotary import apply_rotary
from longspec.models.target import TargetModel

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/test_split_kernel.py"
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])  # bfloat16: on CUDA
def test_add_rms_norm_matches_the_module(tiny_llama, dtype):
    """The residual add is exact; the norm, rounded where the module rounds, is within
    one unit in the dtype's last place (rsqrt itself may round differently)."""
    model, _ = tiny_llama
    norm = copy.deepcopy(model.model.layers[0].input_layernorm).to(dtype)
    gen = torch.Generator().manual_seed(0)
    x, delta = torch.randn(2, 2, 5, model.config.hidden_size, generator=gen).to(dtype)
    eps = 1e-6 if dtype == torch.float32 else torch.finfo(dtype).eps

    def close(got: torch.Tensor, want: torch.Tensor) -> bool:
        want = want.float()
        return bool(((got.float() - want).abs() <= eps * want.abs().clamp_min(1)).all())

    summed, normed = add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)
    assert torch.equal(summed, x + delta)
    assert close(normed, norm(x + delta))
    alone = add_rms_norm(x, None, norm.weight, norm.variance_epsilon)[1]
    assert close(alone, norm(x))


def test_rotary_into_cache_matches_rotate_then_write():
    gen = torch.Generator().manual_seed(1)
    n_q, n_kv, dim, batch, n_tok = 4, 2, 16, 2, 3
    qkv = torch.randn(batch, n_tok, (n_q + 2 * n_kv) * dim, generator=gen)
    cos, sin = torch.randn(2, batch, n_tok, dim, generator=gen)
    start = torch.tensor([5, 0])
    cache = KVCache(1, batch, n_kv, 12, dim, torch.float32, "cpu")
    k_cache, v_cache = cache.layer(0)
    q, k, v = rotary_into_cache(qkv, cos, sin, k_cache, v_cache, start, n_q, n_kv)
    heads = qkv.unflatten(-1, (n_q + 2 * n_kv, dim)).transpose(1, 2)  # (B, H, T, D)
    want_q = apply_rotary(heads[:, :n_q], cos, sin)
    want_k = apply_rotary(heads[:, n_q : n_q + n_kv], cos, sin)
    assert (q - want_q).abs().max() <= 1e-6 and (k - want_k).abs().max() <= 1e-6
    assert torch.equal(v, heads[:, n_q + n_kv :])
    ref = KVCache(1, batch, n_kv, 12, dim, torch.float32, "cpu")
    ref.write(0, want_k, heads[:, n_q + n_kv :], start)
    assert (k_cache - ref.layer(0)[0]).abs().max() <= 1e-6
    assert torch.equal(v_cache, ref.layer(0)[1])


def test_silu_mul_matches_the_mlp_activation():
    gen = torch.Generator().manual_seed(2)
    gate_up = torch.randn(3, 4, 2 * 1100, generator=gen)
    gate, up = gate_up.chunk(2, -1)
    assert (silu_mul(gate_up) - torch.nn.functional.silu(gate) * up).abs().max() <= 1e-6


GEMV_LAUNCHES = [GemvLaunch(8, 64, 4, 3), GemvLaunch(4, 128, 4, 2)]


@pytest.mark.parametrize("launch", GEMV_LAUNCHES)
@pytest.mark.parametrize("n_out,n_in", [(24, 256), (30, 200)])  # even, ragged
def test_gemv_matches_the_modules(launch, n_out, n_in):
    """Projection (+ bias) (+ residual) of one row, of its RMSNorm, of silu(gate) * up."""
    gen = torch.Generator().manual_seed(n_out)
    w, bias = torch.randn(n_out, n_in, generator=gen), torch.randn(n_out, generator=gen)
    x, res = torch.randn(1, 1, n_in, generator=gen), torch.randn(1, 1, n_out, generator=gen)
    lin = torch.nn.functional.linear
    assert (gemv(x, w, launch=launch) - lin(x, w)).abs().max() <= 1e-4
    assert (gemv(x, w, bias, res, launch=launch) - (lin(x, w, bias) + res)).abs().max() <= 1e-4
    norm = torch.nn.RMSNorm(n_in, eps=1e-5)
    norm.weight.data = torch.rand(n_in, generator=gen) + 0.5
    got = gemv(x, w, norm=RowNorm(norm.weight, norm.eps), launch=launch)
    assert (got - lin(norm(x), w)).abs().max() <= 1e-4
    gate_up = torch.randn(1, 2 * n_in, generator=gen)
    gate, up = gate_up.chunk(2, -1)
    want = lin(torch.nn.functional.silu(gate) * up, w) + res[0]
    got = gemv(gate_up, w, None, res[0], silu_gate=True, launch=launch)
    assert (got - want).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="one row"):
        gemv(torch.randn(2, n_in), w, launch=launch)


ROWS_LAUNCHES = [RowsLaunch(128, 32, 64, 4, 2), RowsLaunch(16, 16, 32, 4, 1)]


@pytest.mark.parametrize("launch", ROWS_LAUNCHES)
@pytest.mark.parametrize("n_rows,n_out,n_in", [(2, 32, 128), (19, 30, 200)])  # even, ragged
def test_gemm_rows_matches_the_modules(launch, n_rows, n_out, n_in):
    """Projection (+ bias) (+ residual) of a few rows, of their RMSNorm, of silu(gate) * up;
    rows that differ in scale, so that each row's norm must be its own."""
    gen = torch.Generator().manual_seed(n_rows)
    w, bias = torch.randn(n_out, n_in, generator=gen), torch.randn(n_out, generator=gen)
    scale = torch.rand(1, n_rows, 1, generator=gen) * 4 + 0.1
    x = torch.randn(1, n_rows, n_in, generator=gen) * scale
    res = torch.randn(1, n_rows, n_out, generator=gen)
    lin = torch.nn.functional.linear
    got = gemm_rows(x, w, bias, res, launch=launch)
    assert (gemm_rows(x, w, launch=launch) - lin(x, w)).abs().max() <= 1e-4
    assert (got - (lin(x, w, bias) + res)).abs().max() <= 1e-4
    norm = torch.nn.RMSNorm(n_in, eps=1e-5)
    norm.weight.data = torch.rand(n_in, generator=gen) + 0.5
    got = gemm_rows(x, w, norm=RowNorm(norm.weight, norm.eps), launch=launch)
    assert (got - lin(norm(x), w)).abs().max() <= 1e-4
    gate_up = torch.randn(n_rows, 2 * n_in, generator=gen)
    gate, up = gate_up.chunk(2, -1)
    want = lin(torch.nn.functional.silu(gate) * up, w) + res[0]
    got = gemm_rows(gate_up, w, None, res[0], silu_gate=True, launch=launch)
    assert (got - want).abs().max() <= 1e-4
    with pytest.raises(ValueError, match="rows of"):
        gemm_rows(torch.randn(2, n_in + 1), w, launch=launch)


def test_few_rows_takes_two_to_max_rows():
    assert not few_rows(torch.zeros(1, 1, 8))  # one row: gemv's
    assert few_rows(torch.zeros(1, 70, 8)) and few_rows(torch.zeros(2, 64, 8))
    assert not few_rows(torch.zeros(1, 129, 8))  # a prefill chunk: cuBLAS
    assert not few_rows(torch.zeros(1, 4, 8, dtype=torch.float64))


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_few_row_layers_match_the_general_ones(name, request, monkeypatch):
    """A prefill of 17 tokens and a tree's verification through gemm_rows (four projections
    a layer) give the logits of the cuBLAS path."""
    model, _ = request.getfixturevalue(name)
    target = TargetModel(model, TritonHybridAttention(min_prefix=0), static=True)
    fused = FusedLayers(target.body, target.attention, target.n_heads, target.n_kv_heads)
    target.fused = fused
    prompt = torch.randint(3, target.vocab_size, (1, 17))
    tokens = torch.randint(3, target.vocab_size, (1, 5))
    depths = torch.tensor([[0, 1, 1, 2, 2]])
    mask = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 0, 1, 0, 0],
                         [1, 1, 0, 1, 0], [1, 0, 1, 0, 1]], dtype=torch.bool)[None]  # fmt: skip
    calls, project = [], gemm_rows_module.gemm_rows
    monkeypatch.setattr(
        gemm_rows_module, "gemm_rows", lambda *a, **k: calls.append(1) or project(*a, **k)
    )
    outs = []
    for use_rows in (False, True):
        fused.rows = use_rows
        cache = target.new_cache(1, 200)
        target.prefill(prompt, torch.tensor([17]), cache)
        outs.append(target.verify(tokens, depths, mask, cache).clone())  # (1, 5, V)
    assert len(calls) == 2 * 4 * target.n_layers  # prefill and verification, rows=True only
    assert (outs[0] - outs[1]).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_one_row_layers_match_the_general_ones(name, request):
    """A batch-1 step through gemv kernels gives the hidden states of the general path."""
    model, _ = request.getfixturevalue(name)
    target = TargetModel(model, TritonHybridAttention(min_prefix=0), static=True)
    fused = FusedLayers(target.body, target.attention, target.n_heads, target.n_kv_heads)
    target.fused = fused
    prompt = torch.randint(3, target.vocab_size, (1, 17))
    outs = []
    for use_gemv in (False, True):
        fused.gemv = use_gemv
        cache = target.new_cache(1, 24)
        target.prefill(prompt, torch.tensor([17]), cache)
        one = torch.zeros(1, 1, dtype=torch.long), torch.ones(1, 1, 1, dtype=torch.bool)
        outs.append(target.verify(prompt[:, -1:], *one, cache).clone())  # (1, 1, V)
    assert (outs[0] - outs[1]).abs().max() <= 1e-4


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("lengths", [(23, 9), (23,)])  # a batch of two; one row (gemv steps)
def test_fused_target_is_lossless(name, lengths, request):
    model, _ = request.getfixturevalue(name)
    plain = TargetModel(model, eager_attention)
    gen = Generation(max_new_tokens=10, eos_ids=())
    prompts = [torch.randint(3, plain.vocab_size, (n,)).tolist() for n in lengths]
    want = [r.output_ids for r in Vanilla().generate(plain, prompts, gen, pad_id=0)]
    fused = TargetModel(model, TritonHybridAttention(min_prefix=0), static=True)
    fused.fused = FusedLayers(fused.body, fused.attention, fused.n_heads, fused.n_kv_heads)
    draft = random_glide(model.config, 0, fused.dtype, fused.device)
    for strategy in (Vanilla(), TreeDecoding(draft, (2, 2))):
        got = [r.output_ids for r in strategy.generate(fused, prompts, gen, pad_id=0)]
        assert got == want


def test_fused_draft_norms_match_the_modules(tiny_llama):
    """On CUDA the draft's residual adds and norms run as add_rms_norm: same logits."""
    model, _ = tiny_llama
    target = TargetModel(model, eager_attention, static=True)
    layer = random_glide(model.config, 0, target.dtype, target.device)
    for norm in (layer.input_layernorm, layer.post_cross_attention_layernorm):
        norm.weight.data.uniform_(0.5, 1.5)  # not all ones: the weight must be applied
    cache = target.new_cache(1, 64)
    target.prefill(torch.arange(3, 40)[None], torch.tensor([37]), cache)
    logits = []
    for fused in (False, True):
        draft = GlideDraft(layer, target, eager_attention, window=16)
        draft.fused = FusedDraft(layer) if fused else None
        dcache = draft.new_cache(1, 4, 4)
        draft.absorb(dcache, torch.arange(3, 40)[None], torch.arange(37)[None],
                     torch.ones(1, 37, dtype=torch.bool))  # fmt: skip
        sees = torch.ones(1, 1, 1, dtype=torch.bool)
        logits.append(draft.step(dcache, cache, torch.tensor([[7]]), torch.tensor([[37]]), sees))
    assert (logits[0] - logits[1]).abs().max() <= 1e-4


def test_fused_draft_step_matches_the_plain_one(tiny_llama, monkeypatch):
    """The draft's fused projections (q|k|v with rotary into the pending set, rotated cross
    queries, gate|up + SiLU-multiply) and its one-pass self-attention over [ring | pending]
    give the plain path's logits, level after level (the second level's two nodes share a
    position, as a tree level's do, so the fused attention serves both levels)."""
    model, _ = tiny_llama
    target = TargetModel(model, eager_attention, static=True)
    cache = target.new_cache(1, 64)
    target.prefill(torch.arange(3, 40)[None], torch.tensor([37]), cache)
    calls, attend = [], FusedDraft.self_attention
    monkeypatch.setattr(FusedDraft, "self_attention", lambda *a: calls.append(1) or attend(*a))
    runs = []
    for fused in (False, True):
        layer = random_glide(model.config, 0, target.dtype, target.device)
        draft = GlideDraft(layer, target, eager_attention, window=16)
        draft.fused = FusedDraft(layer) if fused else None
        dcache = draft.new_cache(1, 4, 4)
        draft.absorb(dcache, torch.arange(3, 40)[None], torch.arange(37)[None],
                     torch.ones(1, 37, dtype=torch.bool))  # fmt: skip
        first = draft.step(dcache, cache, torch.tensor([[7]]), torch.tensor([[37]]),
                           torch.ones(1, 1, 1, dtype=torch.bool))  # fmt: skip
        sees = torch.tensor([[[True, True, False], [True, False, True]]])  # two children
        level = torch.tensor([[38]]).expand(-1, 2)  # one position for both nodes
        second = draft.step(dcache, cache, torch.tensor([[9, 4]]), level, sees)
        runs.append(torch.cat([first, second], 1))
    assert len(calls) == 2  # the fused run's two levels
    assert (runs[0] - runs[1]).abs().max() <= 1e-4


def test_shared_position_needs_no_read():
    assert shared_position(torch.tensor([[5]]))
    assert shared_position(torch.tensor([[5]]).expand(-1, 3))
    assert not shared_position(torch.tensor([[5, 5, 5]]))  # equal, but only a read says so


def test_fused_absorb_fills_the_ring_like_the_plain_one(tiny_llama):
    """The fused absorb (norm kernel, one k|v projection, rotary and the scattered ring
    writes in one kernel) stores what the plain one does: a right-padded prompt longer
    than the ring, then rounds that keep 1..3 tokens and wrap around the ring."""
    model, _ = tiny_llama
    target = TargetModel(model, eager_attention, static=True)
    target.new_cache(2, 64)  # the rotary table
    layer = random_glide(model.config, 0, target.dtype, target.device)
    layer.input_layernorm.weight.data.uniform_(0.5, 1.5)
    gen = torch.Generator().manual_seed(3)
    ids = torch.randint(3, 200, (2, 20), generator=gen)
    lengths = torch.tensor([20, 13])
    rings = []
    for fused in (False, True):
        draft = GlideDraft(layer, target, eager_attention, window=8)
        draft.fused = FusedDraft(layer) if fused else None
        cache = draft.new_cache(2, 4, 4)  # period 12: the prompt and rounds wrap
        pos = torch.arange(20).expand(2, -1)
        draft.absorb(cache, ids, pos, pos < lengths[:, None])
        base = lengths.clone()
        for keep in ([3, 1], [2, 3], [1, 2]):
            n_keep = torch.tensor(keep)
            offsets = torch.arange(3)
            kept = torch.randint(3, 200, (2, 3), generator=torch.Generator().manual_seed(sum(keep)))
            draft.absorb(cache, kept, base[:, None] + offsets, offsets < n_keep[:, None])
            base += n_keep
        rings.append(cache)
    plain, fused = rings
    assert torch.equal(plain.ring_pos, fused.ring_pos)
    used = (plain.ring_pos >= 0)[:, None, :, None]  # (B, 1, C, 1): the spare slot is junk
    for a, b in ((plain.ring_k, fused.ring_k), (plain.ring_v, fused.ring_v)):
        assert torch.where(used, a - b, 0).abs().max() <= 1e-6  # one k|v GEMM vs two
    for row, last in zip(plain.ring_pos, (25, 18), strict=True):  # each row's last period
        assert sorted(row[row >= 0].tolist()) == list(range(last - 11, last + 1))


@pytest.mark.parametrize("n_slots", [19, 2500])  # one block; three (the last partial)
def test_ring_keep_matches_ring_visible(n_slots):
    """The one-kernel ring visibility equals DraftCache.ring_visible at one position."""
    from longspec.models.draft_kernels import ring_keep

    gen = torch.Generator().manual_seed(n_slots)
    cache = DraftCache(3, 1, 4, window=16, max_absorb=n_slots - 17, max_pending=2,
                       dtype=torch.float32, device="cpu")  # fmt: skip
    cache.ring_pos[:] = torch.randint(-1, 60, cache.ring_pos.shape, generator=gen)
    qpos = torch.tensor([[30], [5], [61]]).expand(-1, 2)  # a level: one position per row
    want = cache.ring_visible(qpos[:, :1])[:, 0]  # (B, C)
    got = ring_keep(cache.ring_pos, qpos[:, 0], cache.window)
    assert got.dtype == torch.bool and torch.equal(got, want) and want.any()


def test_embed_rms_norm_is_the_lookup_then_the_norm(tiny_llama):
    """The draft's fused embedding lookup + input norm equals the lookup, then the norm."""
    from longspec.models.fused_kernels import embed_rms_norm

    model, _ = tiny_llama
    table = model.model.embed_tokens.weight
    norm = copy.deepcopy(model.model.layers[0].input_layernorm)
    norm.weight.data.uniform_(0.5, 1.5)
    ids = torch.tensor([[5, 0, 255], [7, 7, 3]])
    x, h = embed_rms_norm(ids, table, norm.weight, norm.variance_epsilon)
    assert torch.equal(x, table[ids])
    assert (h - norm(table[ids])).abs().max() <= 1e-6
