"""Sampled speculative decoding has exactly the target's distribution (whole decode loop).

A tiny random Llama with a 6-token vocabulary; the exact probability of every sequence of
the first 3 generated tokens is enumerated from the target, and the tokens produced by
`seq` and `tree` (random GLIDE drafts, lossless rules) are compared with it by a chi-square
test. The same test rejects the research code's tree rule (target probabilities indexed
by tree node instead of token id), so it has the power to catch a wrong rule.
"""

import itertools

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import longspec.decoding.strategy as strategy_mod
from longspec.attention import sdpa_attention
from longspec.decoding.glide import ChainDecoding, TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel
from longspec.verify import Acceptance, accept_tree_sampled

VOCAB, N_TOKENS, PROMPT = 6, 3, [1, 4, 2, 5]
SAMPLES, BATCH = 12000, 2000


@pytest.fixture(scope="module")
def target() -> TargetModel:
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.3,
    )
    return TargetModel(LlamaForCausalLM(cfg).eval(), sdpa_attention)


def exact_distribution(target: TargetModel, temperature: float) -> dict[tuple, float]:
    """P(t1, t2, t3) for every sequence, from the target's own logits."""
    seqs = list(itertools.product(range(VOCAB), repeat=N_TOKENS))
    ids = torch.tensor([PROMPT + list(s) for s in seqs])
    with torch.inference_mode():
        logits = target.hf(ids).logits.float()  # (S, P+3, V)
    logp = torch.log_softmax(logits / temperature, -1)
    total = torch.zeros(len(seqs))
    for i in range(N_TOKENS):
        total += logp[:, len(PROMPT) - 1 + i].gather(1, ids[:, len(PROMPT) + i, None])[:, 0]
    return {s: float(p) for s, p in zip(seqs, total.exp(), strict=True)}


def sample_counts(target, make, temperature: float, seed: int) -> dict[tuple, int]:
    counts: dict[tuple, int] = {}
    for i in range(SAMPLES // BATCH):
        gen = Generation(N_TOKENS, (), temperature=temperature, seed=seed * 100 + i)
        for row in make().generate(target, [PROMPT] * BATCH, gen, pad_id=0):
            key = tuple(row.output_ids)
            counts[key] = counts.get(key, 0) + 1
    return counts


def chi_square_pvalue(counts: dict, probs: dict, min_expected: float = 5.0) -> float:
    """Pearson chi-square of observed counts against exact probabilities; cells expected
    fewer than ``min_expected`` times are pooled into one (the test's usual validity rule)."""
    n = sum(counts.values())
    big = {k: p for k, p in probs.items() if n * p >= min_expected}
    cells = [(counts.get(k, 0), n * p) for k, p in big.items()]
    rest_p = 1.0 - sum(big.values())
    cells.append((n - sum(c for c, _ in cells), n * rest_p))
    stat = sum((obs - exp) ** 2 / exp for obs, exp in cells if exp > 0)
    dof = torch.tensor(len(cells) - 1.0)
    return float(torch.special.gammaincc(dof / 2, torch.tensor(stat) / 2))


def first_token(table: dict) -> dict:
    """Marginal of the first generated token (few cells: the most sensitive test)."""
    out: dict = {}
    for key, value in table.items():
        out[key[:1]] = out.get(key[:1], 0) + value
    return out


def wrong_tree_rule(tokens, parents, probs, generator, *tree) -> Acceptance:
    """The research code's defect: p looked up by node index instead of token id."""
    by_node = probs.clone()
    n = tokens.shape[1]
    by_node[..., :n] = probs.gather(2, tokens[:, None, :].expand(-1, n, -1))
    return accept_tree_sampled(tokens, parents, by_node, generator, *tree)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
@pytest.mark.parametrize("method", ["vanilla", "seq", "tree", "seq_subvocab", "tree_subvocab"])
def test_sampled_output_has_target_distribution(target, temperature, method):
    """*_subvocab: the draft scores only 3 of the 6 tokens (decode.draft_vocab)."""
    draft = random_glide(target.hf.config, 3, torch.float32, "cpu")
    draft.token_ranking = torch.tensor([3, 0, 5, 1, 2, 4])
    make = {
        "vanilla": Vanilla,
        "seq": lambda: ChainDecoding(draft, 2),
        "tree": lambda: TreeDecoding(draft, (2, 2)),
        "seq_subvocab": lambda: ChainDecoding(draft, 2, draft_vocab=3),
        "tree_subvocab": lambda: TreeDecoding(draft, (2, 2), draft_vocab=3),
    }[method]
    probs = exact_distribution(target, temperature)
    counts = sample_counts(target, make, temperature, seed=7)
    joint = chi_square_pvalue(counts, probs)
    first = chi_square_pvalue(first_token(counts), first_token(probs))
    assert min(joint, first) > 1e-3, f"{method} T={temperature}: p = {joint:.2e}, {first:.2e}"


def test_wrong_rule_is_rejected(target, monkeypatch):
    monkeypatch.setattr(strategy_mod, "accept_tree_sampled", wrong_tree_rule)
    draft = random_glide(target.hf.config, 3, torch.float32, "cpu")
    probs = exact_distribution(target, 1.0)
    counts = sample_counts(target, lambda: TreeDecoding(draft, (2, 2)), 1.0, seed=7)
    assert chi_square_pvalue(counts, probs) < 1e-6


def test_chi_square_detects_a_two_percent_shift(target):
    """Power: with SAMPLES draws, moving 2% of probability between the two likeliest first
    tokens is rejected (p < 1e-3) in at least 8 of 10 trials."""
    probs = first_token(exact_distribution(target, 1.0))
    keys = sorted(probs, key=probs.get, reverse=True)
    shifted = torch.tensor([probs[k] for k in keys], dtype=torch.float64)
    shifted[0] -= 0.02
    shifted[1] += 0.02
    gen = torch.Generator().manual_seed(0)
    rejected = 0
    for _ in range(10):
        draws = torch.multinomial(shifted, SAMPLES, replacement=True, generator=gen)
        counts = dict(zip(keys, torch.bincount(draws, minlength=len(keys)).tolist(), strict=True))
        rejected += chi_square_pvalue(counts, probs) < 1e-3
    assert rejected >= 8
