"""A reduced draft vocabulary: ranking file, head, lossless decoding, clear errors."""

import pytest
import torch

from longspec.attention import sdpa_attention
from longspec.decoding.glide import ChainDecoding, TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models.draft_vocab import DraftHead, count_tokens, load_ranking, save_ranking
from longspec.models.glide_io import load_glide, random_glide, save_glide
from longspec.models.target import TargetModel


def test_ranking_round_trips_by_decreasing_count(tmp_path):
    counts = count_tokens([torch.tensor([5, 5, 2, 7, 5]), torch.tensor([2, 9])], 10)
    assert counts.tolist() == [0, 0, 2, 0, 0, 3, 0, 1, 0, 1]
    save_ranking(tmp_path, counts, "test")
    assert load_ranking(tmp_path).tolist() == [5, 2, 7, 9]  # ties by id; zero counts left out
    assert load_ranking(tmp_path / "nowhere") is None


def test_head_scores_only_the_kept_tokens():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(50, 8, generator=gen)
    hidden = torch.randn(2, 3, 8, generator=gen)
    ids = torch.tensor([7, 1, 30])
    out = DraftHead(weight, ids)(hidden)  # (2, 3, 50)
    full = hidden @ weight.T
    assert torch.allclose(out[..., ids], full[..., ids], atol=1e-5)
    others = torch.ones(50, dtype=torch.bool)
    others[ids] = False
    assert torch.isneginf(out[..., others]).all()


def test_checkpoint_ships_its_ranking(tiny_llama, tmp_path):
    model, _ = tiny_llama
    layer = random_glide(model.config, 0, torch.float32, "cpu")
    save_glide(layer, tmp_path, model.config)
    assert load_glide(tmp_path, model.config, torch.float32, "cpu").token_ranking is None
    save_ranking(tmp_path, torch.arange(model.config.vocab_size), "test")
    loaded = load_glide(tmp_path, model.config, torch.float32, "cpu")
    assert loaded.token_ranking[0] == model.config.vocab_size - 1


@pytest.mark.parametrize("make", ["tree", "seq"])
def test_reduced_vocabulary_stays_lossless(tiny_llama, make):
    model, _ = tiny_llama
    target = TargetModel(model, sdpa_attention)
    draft = random_glide(model.config, 0, torch.float32, "cpu")
    draft.token_ranking = torch.randperm(model.config.vocab_size, generator=torch.Generator())
    strategy = {
        "tree": lambda: TreeDecoding(draft, (2, 3, 2), draft_vocab=16),
        "seq": lambda: ChainDecoding(draft, 3, draft_vocab=16),
    }[make]()
    gen = Generation(max_new_tokens=20, eos_ids=())
    prompts = [torch.randint(3, target.vocab_size, (n,)).tolist() for n in (33, 12, 21)]
    want = [r.output_ids for r in Vanilla().generate(target, prompts, gen, pad_id=0)]
    got = [r.output_ids for r in strategy.generate(target, prompts, gen, pad_id=0)]
    assert got == want


def test_reduced_vocabulary_errors_name_the_setting(tiny_llama):
    model, _ = tiny_llama
    draft = random_glide(model.config, 0, torch.float32, "cpu")
    with pytest.raises(ValueError, match="decode.draft_vocab needs the draft's token ranking"):
        TreeDecoding(draft, (2, 2), draft_vocab=64)
    draft.token_ranking = torch.arange(10)
    with pytest.raises(ValueError, match="decode.draft_vocab must be a positive integer"):
        ChainDecoding(draft, 2, draft_vocab=0)
