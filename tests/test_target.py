"""The project's own target forward equals transformers' forward and generate."""

import pytest
import torch

from longspec.attention import eager_attention, sdpa_attention
from longspec.decoding.hf import HFGenerate
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models.target import TargetModel


def logits_diff(model, attention, n_prompt=300, n_decode=20, seed=0) -> float:
    """Max |ours - transformers| over prefill-last and 20 single-token decode steps."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, model.config.vocab_size, (1, n_prompt + n_decode), generator=gen)
    with torch.inference_mode():
        ref = model(ids, use_cache=False).logits.float()  # (1, T, V)
    target = TargetModel(model, attention)
    cache = target.new_cache(1, n_prompt + n_decode + 1)
    worst = (
        (target.prefill(ids[:, :n_prompt], torch.tensor([n_prompt]), cache) - ref[:, n_prompt - 1])
        .abs()
        .max()
    )
    one = torch.ones(1, 1, 1, dtype=torch.bool)
    for t in range(n_prompt, n_prompt + n_decode):
        step = target.verify(ids[:, t : t + 1], torch.zeros(1, 1, dtype=torch.long), one, cache)
        cache.commit(torch.ones(1, dtype=torch.long))
        worst = max(worst, (step[:, 0] - ref[:, t]).abs().max())
    return float(worst)


@pytest.mark.parametrize("attention", [eager_attention, sdpa_attention])
@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_forward_matches_transformers(request, name, attention):
    model, _ = request.getfixturevalue(name)
    assert logits_diff(model, attention) <= 1e-4


@pytest.mark.slow
def test_smollm2_forward_matches_transformers(smollm2):
    assert logits_diff(smollm2[0], sdpa_attention) <= 1e-4


@pytest.mark.slow
def test_smollm2_vanilla_equals_generate(smollm2_target, pycode_prompts):
    gen = Generation(max_new_tokens=16, eos_ids=(smollm2_target.hf.config.eos_token_id,))
    ours = [r.output_ids for r in Vanilla().generate(smollm2_target, pycode_prompts, gen, 2)]
    theirs = [r.output_ids for r in HFGenerate().generate(smollm2_target, pycode_prompts, gen, 2)]
    assert all(len(p) >= 1000 for p in pycode_prompts)
    assert ours == theirs


def test_sampling_is_seeded(tiny_llama):
    target = TargetModel(tiny_llama[0], sdpa_attention)
    gen = Generation(max_new_tokens=12, eos_ids=(), temperature=1.0, seed=7)
    prompt = [[5, 6, 7, 8, 9]]
    first = Vanilla().generate(target, prompt, gen, 0)[0].output_ids
    assert Vanilla().generate(target, prompt, gen, 0)[0].output_ids == first
    other = Vanilla().generate(target, prompt, Generation(12, (), 1.0, seed=8), 0)[0].output_ids
    assert other != first


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_static_rotary_table_equals_the_module(request, name):
    """A static target gathers cos/sin from a table made with its pooled cache: the very
    values the rotary module computes at those positions, and the same tokens decoded."""
    model, _ = request.getfixturevalue(name)
    static, plain = (
        TargetModel(model, sdpa_attention, static=True),
        TargetModel(model, sdpa_attention),
    )
    static.new_cache(2, 300)
    assert static._rotary_table is not None and static._rotary_table[0].shape[0] >= 300
    positions = torch.tensor([[0, 7, 299], [255, 1, 3]])
    x = torch.zeros(2, 3, model.config.hidden_size)
    for got, want in zip(static.rotary(x, positions), plain.rotary(x, positions), strict=True):
        assert torch.equal(got, want)
    gen = Generation(max_new_tokens=12, eos_ids=())
    prompts = [[5, 17, 33, 42, 8, 99], [11, 64, 23]]
    outs = [[r.output_ids for r in Vanilla().generate(t, prompts, gen, 0)] for t in (static, plain)]
    assert outs[0] == outs[1]


def test_generate_counts_its_forward_passes(tiny_llama):
    """transformers' generate: one pass per new token (the prefill's included); prompt
    lookup, on a prompt whose continuation repeats n-grams it holds, verifies several
    tokens in some passes with the same greedy output: its tau is measured, above 1."""
    target = TargetModel(tiny_llama[0], sdpa_attention)
    gen = Generation(max_new_tokens=64, eos_ids=())
    plain = HFGenerate().generate(target, [[5, 6, 7, 8, 9] * 4], gen, 0)[0]
    assert plain.target_forwards == len(plain.output_ids) == 64
    prompt = [5, 6, 7, 8, 9] * 4 + plain.output_ids
    again = HFGenerate().generate(target, [prompt], gen, 0)[0]
    lookup = HFGenerate(prompt_lookup_num_tokens=10).generate(target, [prompt], gen, 0)[0]
    assert lookup.output_ids == again.output_ids
    assert again.target_forwards == 64 and lookup.target_forwards < 64
