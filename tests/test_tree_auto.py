"""``decode.tree_shape=auto`` (longspec.autoshape): replayed acceptance of narrower beams
against real ones, predictions against real decoding, the cost model, the search space,
auto decoding end to end on a tiny model (token-identical to vanilla), and bad settings."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import longspec.decoding.glide as glide_module
from longspec.attention import sdpa_attention
from longspec.autoshape.acceptance import Rounds, accepted_per_round, mean_accepted
from longspec.autoshape.costs import CostModel, rising
from longspec.autoshape.policy import (
    MIN_TUNED_TOKENS,
    AutoShape,
    calibration_groups,
    shape_policy,
)
from longspec.autoshape.probe import ShapeProbe, calibrate
from longspec.autoshape.race import Lap, finalists, race, size_class, winner
from longspec.autoshape.search import Choice, ShapeSpace, rank
from longspec.autoshape.tune import held_out, race_length, report
from longspec.bench.timing import Timing
from longspec.config import register
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.metrics import summarize
from longspec.models.draft import GlideDraft
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel
from longspec.tree import TreeShape
from longspec.validate import validate
from longspec.verify import accept_greedy

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = ROOT / "conf"


# ---------------------------------------------------------------------------------------------
# A draft that knows the target: its logits are the target's at the node plus fixed noise per
# node, so acceptance is high but imperfect (a random tiny draft accepts almost nothing).


class OracleDraft:
    """Draft logits = target logits at the node + ``noise`` x N(0, 1) seeded by the node's
    position and root path, so a node gets the same logits in every tree that holds it."""

    def __init__(self, inner: GlideDraft, target: TargetModel, noise: float):
        self.inner, self.target, self.noise = inner, target, noise

    def new_cache(self, *args):
        return self.inner.new_cache(*args)

    def absorb(self, *args) -> None:
        self.inner.absorb(*args)

    vocab_ids = None  # every token: scores are full-vocabulary logits

    def full_logits(self, scores: torch.Tensor) -> torch.Tensor:
        return scores

    def step(self, cache, target_cache, tokens, positions, pending_mask):
        return self.step_scores(cache, target_cache, tokens, positions, pending_mask)

    def step_scores(self, cache, target_cache, tokens, positions, pending_mask):
        batch, n = tokens.shape
        old = pending_mask.shape[2] - n  # nodes of this round proposed before
        if old == 0:
            self.tokens = tokens.new_zeros(batch, 0)
            self.mask = torch.zeros(batch, 0, 0, dtype=torch.bool)
        full = torch.zeros(batch, old + n, old + n, dtype=torch.bool)
        full[:, :old, :old] = self.mask
        full[:, old:] = pending_mask
        self.tokens, self.mask = torch.cat([self.tokens, tokens], 1), full
        depths = full.sum(-1) - 1  # (B, P+T)
        logits = self.target._verify(self.tokens, depths, full, target_cache)[:, old:]
        return logits + self.noise * self._noise(target_cache.lengths, old, logits.shape[-1])

    def _noise(self, lengths, old: int, vocab: int) -> torch.Tensor:
        rows = []
        for b in range(self.tokens.shape[0]):
            per_node = []
            for i in range(old, self.tokens.shape[1]):
                path = tuple(self.tokens[b][self.mask[b, i]].tolist())
                seed = hash((int(lengths[b]), path)) & 0x7FFFFFFF
                gen = torch.Generator().manual_seed(seed)
                per_node.append(torch.randn(vocab, generator=gen))
            rows.append(torch.stack(per_node))
        return torch.stack(rows)  # (B, T, V)


def with_oracle(cls, noise: float):
    """``cls`` (a GLIDE strategy) drafting with an OracleDraft."""

    class Oracle(cls):
        def setup(self, target, batch):
            super().setup(target, batch)
            if not isinstance(self.draft, OracleDraft):
                self.draft = OracleDraft(self.draft, target, noise)

    return Oracle


class DualProbe(with_oracle(ShapeProbe, 1.0)):
    """A probe that also proposes and verifies narrower beams from each round's state and
    records what they really accept."""

    narrow = [(1,), (1, 1, 1), (2, 2, 2), (3, 2, 1), (1, 3, 3), (2, 4, 1)]

    def setup(self, target, batch):
        super().setup(target, batch)
        self.actual = {s: [] for s in self.narrow}

    def _propose(self, root, state):
        for shape in self.narrow:
            dec = TreeDecoding(self.layer, shape)
            dec.target, dec.draft, dec.dcache = self.target, self.draft, self.dcache
            prop = dec._propose(root, state)
            logits = self.target.verify(prop.tokens, prop.depths, prop.mask, state.cache)
            acc = accept_greedy(prop.tokens, prop.parents, logits, prop.max_depth)
            self.actual[shape].append(int(acc.n_accepted[0]))
        return super()._propose(root, state)  # the wide tree last: its KV is what is kept


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The tiny model's ops are too small for a second thread (it only adds contention)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def target(tiny_llama) -> TargetModel:
    return TargetModel(tiny_llama[0], sdpa_attention)


@pytest.fixture(scope="module")
def layer(target):
    return random_glide(target.hf.config, 0, target.dtype, target.device)


def prompt(n: int, seed: int) -> list[int]:
    return torch.randint(3, 259, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


# ---------------------------------------------------------------------------------------------
# Replaying narrower beams from a wide one


def hand_rounds() -> Rounds:
    """A wide (2, 2) tree. Root children A (p .5), B (p .3); A's children a1 .3, a2 .2;
    B's children b1 .9, b2 .05. Level 2 keeps B-b1 (.27) and A-a1 (.15). The target says
    A, then a1."""
    ln = np.log
    tokens = np.array([[0, 10, 11, 21, 20]])  # root, A, B, b1, a1 (level order)
    parents = np.array([[-1, 0, 0, 2, 1]])
    kid_tok = np.array([[[10, 11], [20, 22], [21, 23]]])  # children of root, A, B
    kid_lp = np.array([[[ln(0.5), ln(0.3)], [ln(0.3), ln(0.2)], [ln(0.9), ln(0.05)]]])
    choice = np.array([[10, 20, 5, 5, 7]])  # target's token after root, A, B, b1, a1
    return Rounds.from_log(tokens, parents, kid_tok, kid_lp, choice)


@pytest.mark.parametrize(
    "shape, accepted",
    [
        ((1,), 1),  # A is the root's best child
        ((1, 1), 2),  # a chain keeps A's best child a1
        ((2, 1), 1),  # a beam of two keeps B-b1 (.27) over A-a1 (.15)
        ((1, 2), 2),
        ((2, 2), 2),
    ],
)
def test_replay_follows_the_beam_scores(shape, accepted):
    assert accepted_per_round(hand_rounds(), shape).tolist() == [accepted]


def test_replay_links_children_to_wide_nodes():
    rounds = hand_rounds()
    assert rounds.kid_node[0].tolist() == [[1, 2], [4, -1], [3, -1]]


def test_replay_matches_real_narrow_beams(target, layer):
    """Each recorded round, replayed for a narrower shape, accepts what that shape's own
    beam accepts from the same state, but for rare nodes outside the wide tree."""
    probe = DualProbe(layer, TreeShape((4, 4, 4)), rounds=61)
    rounds, _ = calibrate(probe, target, [[prompt(200, 0)]], Generation(60, ()), 0)
    assert rounds.count >= 20
    deep = 0
    for shape in probe.narrow:
        replay = accepted_per_round(rounds, shape)
        actual = np.array(probe.actual[shape][: rounds.count])
        assert (replay == actual).mean() >= 0.9, (shape, replay, actual)
        assert abs(replay.mean() - actual.mean()) <= 0.1, shape
        deep += int((actual >= 2).sum())
    assert deep >= 20  # the comparison covers multi-token acceptances


def test_predicted_tokens_per_round_match_decoding(target, layer):
    """Calibrate on a prompt, then decode it with each shape: the predicted tokens per
    round (accepted + 1) is what decoding measures, within sampling noise."""
    budget, text = 100, prompt(200, 1)
    probe = with_oracle(ShapeProbe, 0.5)(layer, TreeShape((4, 4, 4)), rounds=budget + 1)
    rounds, _ = calibrate(probe, target, [[text]], Generation(budget, ()), 0)
    tree = with_oracle(TreeDecoding, 0.5)
    for shape in [(1,), (1, 1, 1), (2, 2, 2), (4, 4, 4)]:
        predicted = accepted_per_round(rounds, shape).mean() + 1
        row = tree(layer, shape).generate(target, [text], Generation(budget, ()), 0)[0]
        measured = (row.new_tokens - 1) / (row.target_forwards - 1)
        assert predicted == pytest.approx(measured, rel=0.15), shape


def test_mean_accepted_covers_the_space_and_agrees_with_single_replays(target, layer):
    probe = with_oracle(ShapeProbe, 0.5)(layer, TreeShape((3, 3)), rounds=31)
    rounds, _ = calibrate(probe, target, [[prompt(120, 2)]], Generation(30, ()), 0)
    space = ShapeSpace((1, 2, 3), max_depth=2, max_nodes=5)
    means = mean_accepted(rounds, space.extensions)
    assert sorted(means) == sorted(space.shapes())
    for shape, mean in means.items():
        assert mean == pytest.approx(accepted_per_round(rounds, shape).mean())
    assert means[(3, 2)] >= means[(1,)]  # more nodes on the path's levels never lose here


def test_calibration_holds_out_the_end_of_each_prompt():
    prompts = [list(range(100)), list(range(30)), [7]]
    assert held_out(prompts, 64) == [list(range(50)), list(range(15)), [7]]
    assert held_out(prompts, 10) == [list(range(90)), list(range(20)), [7]]


def test_sampled_calibration_records_draws_from_the_target(target, layer):
    """The recorded choices come from the sampling distribution: near temperature 0 they
    are the greedy choices (and a temperature of 1 records rounds as well)."""
    text, probe = [prompt(100, 8)], with_oracle(ShapeProbe, 0.5)

    def recorded(temperature: float) -> Rounds:
        gen = Generation(30, (), temperature=temperature, seed=3)
        return calibrate(probe(layer, TreeShape((3, 3)), 31), target, [text], gen, 0)[0]

    greedy, cold, warm = recorded(0.0), recorded(1e-4), recorded(1.0)
    assert np.array_equal(greedy.choice, cold.choice)
    assert np.array_equal(accepted_per_round(greedy, (2, 2)), accepted_per_round(cold, (2, 2)))
    assert warm.count > 0 and warm.choice.min() >= 0


# ---------------------------------------------------------------------------------------------
# Costs, space, ranking


def test_cost_model_adds_draft_levels_and_verification():
    costs = CostModel((2, 10), (0.010, 0.050), (1, 5), (0.001, 0.005), overhead_s=0.002)
    shapes = np.array([[2, 3, 0], [1, 0, 0]])
    # [2, 3]: draft root (1 ms) + level of 2 (2 ms); verify 6 nodes (30 ms); overhead 2 ms
    # [1]: draft root (1 ms); verify 2 nodes (10 ms); overhead 2 ms
    assert costs.round_seconds(shapes) == pytest.approx([0.035, 0.013])
    fitted = costs.with_overhead(0.040, (2, 3))
    assert fitted.overhead_s == pytest.approx(0.007)
    assert costs.with_overhead(0.0, (2, 3)).overhead_s == 0.0


def test_cost_model_scaled_to_a_measured_round():
    """with_scale: the probe's excess over its parts becomes a factor on every part, so a
    small tree is charged in proportion instead of a big tree's fixed overhead."""
    costs = CostModel((2, 10), (0.010, 0.050), (1, 5), (0.001, 0.005), overhead_s=0.002)
    scaled = costs.with_scale(0.066, (2, 3))  # parts of [2, 3]: 33 ms -> factor 2
    assert scaled.overhead_s == 0.0 and scaled.scale == pytest.approx(2.0)
    assert scaled.round_seconds(np.array([[1, 0, 0]])) == pytest.approx([0.022])
    assert costs.with_scale(0.001, (2, 3)).scale == 1.0  # never below the parts
    assert scaled.with_overhead(0.040, (2, 3)).scale == 1.0
    assert scaled.as_dict()["scale"] == 2.0


@pytest.mark.parametrize(
    "measured, fitted",
    [
        ([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]),
        ([1.0, 3.0, 2.0, 4.0], [1.0, 2.5, 2.5, 4.0]),
        ([5.0, 1.0, 1.0, 1.0], [2.0, 2.0, 2.0, 2.0]),
        ([1.0, 9.0, 2.0, 1.0, 10.0], [1.0, 4.0, 4.0, 4.0, 10.0]),
    ],
)
def test_costs_are_fitted_non_decreasing(measured, fitted):
    assert rising(measured) == pytest.approx(fitted)


def test_timing_in_turns_reports_each_functions_median():
    calls = []
    timing = Timing(torch.device("cpu"), reps=3, warmup=1)
    out = timing.medians([lambda: calls.append("a"), lambda: calls.append("b")])
    assert calls == ["a", "b"] * 4 and len(out) == 2 and all(t >= 0 for t in out)


def brute_force(widths, max_depth, max_nodes):
    out = {()}
    for depth in range(1, max_depth + 1):
        for shape in itertools.product(widths, repeat=depth):
            peak = shape.index(max(shape))
            rises = all(a <= b for a, b in zip(shape[:peak], shape[1 : peak + 1], strict=True))
            falls = all(a >= b for a, b in zip(shape[peak:], shape[peak + 1 :], strict=False))
            if rises and falls and sum(shape) <= max_nodes:
                out.add(shape)
    return out


@pytest.mark.parametrize("widths, depth, nodes", [((1, 2, 4), 4, 9), ((1, 3, 8), 3, 100)])
def test_space_is_every_rise_then_fall_shape_within_limits(widths, depth, nodes):
    space = ShapeSpace(widths, depth, nodes)
    shapes = space.shapes()
    assert len(shapes) == len(set(shapes))
    assert set(shapes) == brute_force(widths, depth, nodes)
    assert all(sum(s) <= nodes and len(s) <= depth for s in shapes)
    assert max(space.probe.levels) >= max(max(s, default=0) for s in shapes)
    assert space.probe.depth >= max(len(s) for s in shapes)


def test_default_space_holds_the_paper_and_cpu_shapes():
    shapes = set(AutoShape().space.shapes())
    assert {(4, 16, 16, 16, 16), (2, 2, 2), (3, 2, 1), (1, 1, 1)} <= shapes
    assert all(sum(s) <= 128 for s in shapes)


def test_rank_trades_accepted_tokens_against_round_cost():
    costs = CostModel((2, 4), (0.010, 0.030), (1, 2), (0.001, 0.001))
    accepted = {(1,): 0.8, (3,): 1.0, (1, 1): 1.2}
    # round = draft steps (1 ms each, the last level takes none) + verify(nodes + root):
    # (1,) 1.8 / 11 ms = 164; (3,) 2.0 / 31 ms = 65; (1, 1) 2.2 / 22 ms = 100
    best = rank(accepted, costs, top=3)
    assert [c.shape for c in best] == [(1,), (1, 1), (3,)]
    assert best[0].tokens_per_s == pytest.approx(1.8 / 0.011)
    assert best[2].round_s == pytest.approx(0.031)


def test_rank_falls_back_to_no_draft_when_drafting_does_not_pay():
    costs = CostModel((1, 2, 4), (0.010, 0.015, 0.016), (1, 2), (0.002, 0.003))
    # [] 1 / 10 ms = 100; [1] 1.3 / 17 ms = 76; [2, 1] 1.5 / 21 ms = 71
    best = rank({(): 0.0, (1,): 0.3, (2, 1): 0.5}, costs, top=3)
    assert [c.shape for c in best] == [(), (1,), (2, 1)]
    assert [c.round_s for c in best] == pytest.approx([0.010, 0.017, 0.021])
    best = rank({(): 0.0, (1,): 0.6}, costs)  # 1.6 / 17 ms = 94: still not worth it
    assert best[0].shape == ()
    best = rank({(): 0.0, (1,): 0.8}, costs)  # 1.8 / 17 ms = 106
    assert best[0].shape == (1,)


# ---------------------------------------------------------------------------------------------
# The race among the finalists


def test_size_classes_double():
    sizes = {(): 0, (1,): 1, (2,): 2, (1, 2): 2, (4,): 3, (2, 2, 3): 3, (4, 4): 4, (8, 8): 5}
    assert {s: size_class(s) for s in sizes} == sizes


def test_finalists_are_the_best_predicted_of_each_size_class():
    ranked = [Choice(s, 2.0, 1.0) for s in [(2, 2), (4,), (1,), (3, 3), (2,), (1, 1, 1), ()]]
    # classes: (2,2) 3, (4,) 3, (1,) 1, (3,3) 3, (2,) 2, (1,1,1) 2, () 0
    assert [c.shape for c in finalists(ranked, 3)] == [(2, 2), (1,), (2,)]
    assert [c.shape for c in finalists(ranked, 9)] == [(2, 2), (1,), (2,), ()]
    assert [c.shape for c in finalists(ranked, 1)] == [(2, 2)]


def test_the_race_winner_is_the_fastest_measured_not_the_best_predicted():
    predicted = [Choice((4, 4), 3.0, 0.01), Choice((1,), 1.5, 0.01), Choice((2, 2), 2.0, 0.01)]
    measured = [(30, 1.0, 10), (30, 0.5, 20), (30, 0.6, 15)]  # tokens, seconds, forwards
    laps = [Lap(c, *m) for c, m in zip(predicted, measured, strict=True)]
    costs = CostModel((1, 2), (0.01, 0.02), (1,), (0.001,))
    out = report(predicted, laps, hand_rounds(), costs, [[[1, 2, 3]]])
    assert out["shape"] == [1]  # 60 tokens/s measured against 30 and 50
    assert out["predicted_tokens_per_s"] == 150.0  # what the model expected of the winner
    assert [lap["tokens_per_s"] for lap in out["race"]] == [30.0, 60.0, 50.0]
    assert [lap["tau"] for lap in out["race"]] == [3.0, 1.5, 2.0]
    assert report(predicted, [], hand_rounds(), costs, [[[1]]])["shape"] == [4, 4]  # race=1


def test_finalists_within_the_margin_tie_and_the_fewest_nodes_win():
    shapes = [(4, 4), (2, 2), (1,), (3,)]
    measured = [(100, 1.0, 10), (97.5, 1.0, 10), (90, 1.0, 10), (97.5, 1.0, 10)]
    laps = [Lap(Choice(s, 2.0, 0.01), *m) for s, m in zip(shapes, measured, strict=True)]
    assert winner(laps, 0.0).choice.shape == (4, 4)  # no margin: the fastest
    assert winner(laps, 0.03).choice.shape == (3,)  # (2,2) and (3,) tie with it: fewest nodes
    assert winner(laps, 0.2).choice.shape == (1,)
    assert winner(laps[:2], 0.03).choice.shape == (2, 2)
    assert winner([laps[1], laps[3]], 0.0).choice.shape == (3,)  # equal speed: fewer nodes


def test_a_race_lap_counts_what_its_rounds_committed_past_the_budget(target, layer):
    """Decodes cut at a budget drop what their last round committed beyond it; the race
    counts it, so short laps do not charge deep trees for rounds they paid in full."""
    oracle = with_oracle(TreeDecoding, 0.0)(layer, (2, 2, 2))  # the target's own choices
    text, gen = [prompt(60, 15)], Generation(3, ())
    (row,) = oracle.generate(target, text, gen, 0)
    assert row.new_tokens == 3 and 1 + sum(row.accept_lengths) == 1 + 4  # root + 3 accepted


def test_the_race_never_decodes_past_the_real_decodes_end():
    prompts, gen = [[1] * 300, [1] * 40], Generation(16, ())
    calib = held_out(prompts, 64)  # 236 and 20 tokens: 64 and 20 held out
    assert race_length(500, prompts, calib, gen) == 20 + 16
    assert race_length(8, prompts, calib, gen) == 8


def test_calibration_takes_the_decodes_batch_then_upcoming_prompts_of_its_bucket():
    a, b, c, d, e = [1] * 100, [2] * 90, [3] * 120, [4] * 300, [5] * 70  # d: another bucket
    run = [a, b, c, d, e]
    assert calibration_groups([a], run, 4) == [[a], [b], [c], [e]]
    assert calibration_groups([a], run, 2) == [[a], [b]]
    assert calibration_groups([a], [], 4) == [[a]]  # the run announced nothing
    assert calibration_groups([d], run, 4) == [[d]]  # alone in its bucket
    assert calibration_groups([a, b], run, 4) == [[a, b], [c, e]]  # batches of the decode's size
    assert calibration_groups([a, b], run, 3) == [[a, b]]  # whole batches only
    assert calibration_groups([a, b], [a, b, c], 8) == [[a, b]]
    assert calibration_groups([a, b], run, 1) == [[a, b]]  # the decode's own batch always


def test_rounds_of_several_calibrations_concatenate():
    one = hand_rounds()
    two = Rounds.concat([one, one])
    assert two.count == 2 * one.count and two.width == one.width
    for shape in [(1,), (2, 1), (2, 2)]:
        once = accepted_per_round(one, shape)
        assert np.array_equal(accepted_per_round(two, shape), np.concatenate([once, once]))


def test_the_race_sums_every_calibration_batch(target, layer):
    groups = [[prompt(60, 13)], [prompt(50, 14)]]
    choices = [Choice((2,), 2.0, 0.01), Choice((1, 1), 2.0, 0.01)]
    strategy = TreeDecoding(layer, "auto", auto=SMALL)
    laps = race(strategy, target, groups, Generation(64, ()), 0, choices, 8)
    assert [lap.choice for lap in laps] == choices
    # 8 tokens a batch, and what the last round of each committed past them (depth <= 2)
    assert all(16 <= lap.tokens <= 16 + 2 * 2 and lap.seconds > 0 for lap in laps)
    assert all(2 * 3 <= lap.forwards <= 16 for lap in laps)  # per batch: prefill + >= 2 rounds


def test_each_finalist_decodes_with_the_strategys_draft_and_is_timed(target, monkeypatch):
    import longspec.autoshape.race as race_module

    texts = [prompt(60, 11), prompt(45, 12)]
    want = [r.output_ids for r in Vanilla().generate(target, texts, Generation(10, ()), 0)]
    ranked = random_glide(target.hf.config, 1, target.dtype, target.device)
    ranked.token_ranking = torch.arange(258, 2, -1)
    strategy = TreeDecoding(ranked, "auto", window=32, auto=SMALL, draft_vocab=50)
    outputs, make = [], race_module._runner

    def spy(strategy: TreeDecoding, shape):
        runner = make(strategy, shape)
        assert runner.layer is ranked and runner.window == 32 and runner.shape.levels == shape
        assert torch.equal(runner.vocab_ids, strategy.vocab_ids)
        plain = runner.generate
        runner.generate = lambda *a, **k: outputs.append(plain(*a, **k)) or outputs[-1]
        return runner

    monkeypatch.setattr(race_module, "_runner", spy)
    choices = [Choice((2, 1), 2.0, 0.01), Choice((), 1.0, 0.01)]
    laps = race(strategy, target, [texts], Generation(64, (2,)), 0, choices, 10)
    assert [lap.choice for lap in laps] == choices
    assert all(lap.seconds > 0 for lap in laps)
    assert laps[1].tokens == 20  # EOS is ignored; no draft: nothing past the budget
    assert 20 <= laps[0].tokens <= 20 + 2 * 2  # + what the last rounds committed past it
    assert laps[1].forwards == 20  # no draft: one token per forward, prefill included
    assert all(2 <= lap.forwards <= 20 for lap in laps)
    got = [[r.output_ids[:10] for r in rows] for rows in outputs]
    assert got == [want, want]  # greedy: every finalist's decode is vanilla's


def test_empty_shape_decodes_like_vanilla(target, layer):
    texts, gen = [prompt(70, 9), prompt(50, 10)], Generation(12, ())
    want = [r.output_ids for r in Vanilla().generate(target, texts, gen, 0)]
    rows = TreeDecoding(layer, ()).generate(target, texts, gen, 0)
    assert [r.output_ids for r in rows] == want
    assert all(r.target_forwards == 12 for r in rows)  # prefill + 11 one-token rounds


# ---------------------------------------------------------------------------------------------
# Auto decoding end to end


SMALL = {
    "widths": [1, 2, 3],
    "max_depth": 3,
    "max_nodes": 6,
    "calib_tokens": 24,
    "race": 3,
    "race_tokens": 12,
}


def test_auto_decodes_like_vanilla_and_reports_its_choice(target, layer, monkeypatch):
    oracle = lambda *a: OracleDraft(GlideDraft(*a), target, 0.5)  # noqa: E731
    monkeypatch.setattr(glide_module, "GlideDraft", oracle)
    texts, gen = [prompt(150, 3)], Generation(40, ())
    want = Vanilla().generate(target, texts, gen, 0)[0].output_ids
    # No margin: the winner must be the fastest lap (the margin rule has its own test).
    auto = TreeDecoding(layer, "auto", auto=SMALL | {"race_margin": 0.0})
    short = auto.generate(target, texts, Generation(MIN_TUNED_TOKENS - 1, ()), 0)[0]
    assert auto.describe() == {"tree_auto": []}  # a warm-up-sized decode does not tune
    assert short.output_ids == want[: MIN_TUNED_TOKENS - 1]
    rows = auto.generate(target, texts, gen, 0)
    assert rows[0].output_ids == want
    (chosen,) = auto.describe()["tree_auto"]
    assert tuple(chosen["shape"]) in set(ShapeSpace([1, 2, 3], 3, 6).shapes())
    assert auto.shape.levels == tuple(chosen["shape"])
    assert chosen["calibration_rounds"] >= 5
    first = chosen["acceptance_profile"][0]  # the oracle's best child is often the target's
    assert first["rounds"] == chosen["calibration_rounds"] and first["rank_share"][0] > 0.3
    assert chosen["predicted_tokens_per_round"] >= 1.0
    assert chosen["costs"]["verify_ms"] and chosen["costs"]["draft_level_ms"]
    assert [p["depth"] for p in chosen["acceptance_profile"]] == [1, 2, 3]
    laps = chosen["race"]  # the best predicted shape of each size class, best first
    assert 2 <= len(laps) <= 3
    assert len({size_class(tuple(lap["shape"])) for lap in laps}) == len(laps)
    assert laps[0]["shape"] == chosen["predicted_best"][0]["shape"]
    assert chosen["shape"] == max(laps, key=lambda lap: lap["tokens_per_s"])["shape"]
    auto.generate(target, texts, gen, 0)  # same bucket: no second tuning
    assert len(auto.describe()["tree_auto"]) == 1
    record = {"batch": 0, "decode_s": 1.0, "prefill_s": 0.1, "new_tokens": 40}
    summary = summarize([{**record, "target_forwards": 20, "peak_memory_bytes": 0}], auto)
    assert summary["tree_auto"][0]["shape"] == chosen["shape"]


def test_auto_calibrates_on_the_runs_prompts_of_its_bucket(target, layer, monkeypatch):
    import longspec.autoshape.tune as tune_module

    seen, plain = [], tune_module.calibrate
    spy = lambda probe, target, groups, *a: seen.append(groups) or plain(probe, target, groups, *a)  # noqa: E731
    monkeypatch.setattr(tune_module, "calibrate", spy)
    texts = [prompt(100, 20), prompt(300, 21), prompt(110, 22), prompt(90, 23), prompt(80, 24)]
    gen = Generation(20, ())
    auto = TreeDecoding(layer, "auto", auto=SMALL | {"prompts": 3})
    auto.plan(texts)
    want = Vanilla().generate(target, texts[:1], gen, 0)[0].output_ids
    assert auto.generate(target, texts[:1], gen, 0)[0].output_ids == want
    (chosen,) = auto.describe()["tree_auto"]
    assert chosen["calibration_prompts"] == 3 and chosen["batch"] == 1
    assert chosen["prompt_tokens"] == 100  # the decode's own prompt
    assert seen == [[held_out([t], SMALL["calib_tokens"]) for t in (texts[0], texts[2], texts[3])]]
    assert sum(lap["tau"] > 0 for lap in chosen["race"]) == len(chosen["race"])


def test_a_new_tuning_always_prepares_the_chosen_shape(target, layer, monkeypatch):
    """Tuning drops the captured graphs: the decode after it must capture its shape's anew
    (untimed), even when the tuned shape is the one the strategy already has."""
    import longspec.autoshape.tune as tune_module

    monkeypatch.setattr(tune_module, "tune", lambda *a: {"shape": [1]})
    auto = TreeDecoding(layer, "auto", auto=SMALL)
    switched = []
    monkeypatch.setattr(auto, "_switch", lambda shape, *a: switched.append(shape))
    text, gen = [prompt(80, 30)], Generation(20, ())
    assert auto.shape == TreeShape((1,))
    auto.generate(target, text, gen, 0)
    auto.generate(target, text, gen, 0)  # same bucket: no tuning, nothing to prepare
    assert switched == [TreeShape((1,))]


def test_auto_with_a_random_draft_matches_vanilla_on_a_batch(target, layer):
    texts, gen = [prompt(90, 4), prompt(60, 5)], Generation(20, ())
    want = [r.output_ids for r in Vanilla().generate(target, texts, gen, 0)]
    auto = TreeDecoding(layer, "auto", auto=SMALL)
    assert [r.output_ids for r in auto.generate(target, texts, gen, 0)] == want
    assert auto.describe()["tree_auto"][0]["batch"] == 2


def test_auto_calibrates_with_the_strategys_draft_vocabulary(target, monkeypatch):
    import longspec.autoshape.tune as tune_module

    probes = []

    class Spy(ShapeProbe):
        def __init__(self, *args):
            super().__init__(*args)
            probes.append(self)

    monkeypatch.setattr(tune_module, "ShapeProbe", Spy)
    ranked = random_glide(target.hf.config, 1, target.dtype, target.device)
    ranked.token_ranking = torch.arange(258, 2, -1)  # ids 258, 257, ..., 3
    texts, gen = [prompt(80, 7)], Generation(20, ())
    want = Vanilla().generate(target, texts, gen, 0)[0].output_ids
    auto = TreeDecoding(ranked, "auto", auto=SMALL, draft_vocab=40)
    assert auto.generate(target, texts, gen, 0)[0].output_ids == want
    (probe,) = probes
    assert torch.equal(probe.vocab_ids, auto.vocab_ids)
    assert auto.describe()["tree_auto"][0]["prompt_tokens"] == 80
    recorded = probe.log.kid_tok[: int(probe.log.count)]  # (R, B, M, W)
    assert recorded.numel() and recorded.min() >= 258 - 39  # all candidates among the 40 kept


@pytest.mark.gpu
def test_auto_on_cuda_graphs_matches_vanilla(tiny_llama):
    model = tiny_llama[0].to("cuda")
    try:
        cuda = TargetModel(model, sdpa_attention, static=True)
        draft = random_glide(model.config, 0, cuda.dtype, cuda.device)
        texts, gen = [prompt(150, 6)], Generation(40, ())
        want = Vanilla().generate(cuda, texts, gen, 0)[0].output_ids
        auto = TreeDecoding(draft, "auto", auto=SMALL)
        assert auto.generate(cuda, texts, gen, 0)[0].output_ids == want
        assert auto.describe()["tree_auto"][0]["calibration_rounds"] >= 5
    finally:
        model.to("cpu")


# ---------------------------------------------------------------------------------------------
# Bad settings: one line naming the setting


@pytest.mark.parametrize(
    "tree_shape, auto, words",
    [
        ("automatic", None, "decode.tree_shape must be a list of nodes per level"),
        ("auto", {"widths": []}, "decode.auto.widths must be a non-empty list"),
        ("auto", {"widths": [2, 0]}, "decode.auto.widths must be a positive integer"),
        ("auto", {"max_depth": 0}, "decode.auto.max_depth must be a positive integer"),
        ("auto", {"max_nodes": 2.5}, "decode.auto.max_nodes must be a positive integer"),
        ("auto", {"calib_tokens": 1}, "decode.auto.calib_tokens must be at least 2"),
        ("auto", {"widths": [512], "max_nodes": 4096}, "calibration tree"),
        ("auto", {"depth": 3}, "decode.auto.depth is not a setting"),
        ("auto", {"scale_costs": "yes"}, "decode.auto.scale_costs must be true or false"),
        ("auto", {"race": 0}, "decode.auto.race must be a positive integer"),
        ("auto", {"race_tokens": "many"}, "decode.auto.race_tokens must be a positive integer"),
        ("auto", {"prompts": 0}, "decode.auto.prompts must be a positive integer"),
        ("auto", {"race_margin": 1.0}, r"decode.auto.race_margin must be a number in \[0, 1\)"),
        ("auto", {"race_margin": "x"}, r"decode.auto.race_margin must be a number in \[0, 1\)"),
    ],
)
def test_bad_settings_raise_one_line(tree_shape, auto, words):
    with pytest.raises(ValueError, match=words) as err:
        shape_policy(tree_shape, auto)
    assert "\n" not in str(err.value)


def composed(*overrides: str):
    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=["model=tiny_llama", "decode=tree", *overrides])


def test_config_accepts_auto_and_rejects_bad_settings():
    cfg = composed("decode.tree_shape=auto")
    validate(cfg)
    settings = OmegaConf.to_container(cfg.decode.auto, resolve=True)
    assert settings["max_nodes"] == 128
    assert settings["scale_costs"] is (not torch.cuda.is_available())  # device=auto
    for override, words in [
        ("decode.tree_shape=automatic", "decode.tree_shape must be a non-empty list"),
        ("decode.auto.max_depth=0", "decode.auto.max_depth must be a positive integer"),
        ("+decode.auto.extra=1", "decode.auto.extra is not a setting"),
    ]:
        with pytest.raises(ValueError, match=words) as err:
            validate(composed("decode.tree_shape=auto", override))
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# As users run it


def test_run_py_reports_the_tuned_shape_in_summary(tmp_path):
    env = dict(os.environ, LONGSPEC_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    overrides = [
        f"hydra.run.dir={tmp_path / 'run'}",
        "model=tiny_llama",
        "decode=tree",
        "decode.tree_shape=auto",
        "decode.auto.widths=[1,2]",
        "decode.auto.max_depth=2",
        "decode.auto.calib_tokens=16",
        "~decode@baseline",
        "data=pycode",
        "data.num_samples=2",
        "data.prompt_tokens=96",
        f"generation.max_new_tokens={MIN_TUNED_TOKENS + 4}",
    ]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    (chosen,) = summary["tree_auto"]
    assert tuple(chosen["shape"]) in set(ShapeSpace([1, 2], 2, 128).shapes())
    assert chosen["prompt_tokens"] == 96 and chosen["tune_s"] > 0
    assert chosen["calibration_prompts"] == 2  # the run's other sample too (plan)


def test_benchmark_script_methods_and_table():
    spec = importlib.util.spec_from_file_location("auto_shape", ROOT / "experiments/auto_shape.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    cfg = bench.config(["device=cpu", "data.num_samples=1"])
    assert cfg.generation.max_new_tokens == 64 and cfg.data.num_samples == 1
    names = [name for name, _ in bench.methods(cfg)]
    shapes = [node.tree_shape for _, node in bench.methods(cfg)[1:]]
    assert names[0] == "vanilla" and names[-1] == "tree auto"
    assert shapes == [*bench.FIXED, "auto"]
    rows = [
        {"method": n, "tau": 1.0, "tokens_per_s": 10.0 + i, "outputs": [[i > 2]]}
        for i, n in enumerate(names)
    ]
    rows[-1]["tree_auto"] = [{"shape": [2, 2]}]
    text = bench.table(rows).splitlines()
    assert "| tree auto | [2,2] | 1.00 | 16.00 | 1.60x | 1.07 | False |" in text
    assert "| tree [1,1,1] | - | 1.00 | 11.00 | 1.10x | 0.73 | True |" in text
    rest, calib = bench.split_calib(["device=cpu", "calib=64,256"])
    assert rest == ["device=cpu"] and calib == [64, 256]
    autos = [(n, node.auto.calib_tokens) for n, node in bench.methods(cfg, calib)[-2:]]
    assert autos == [("tree auto (calib 64)", 64), ("tree auto (calib 256)", 256)]


def test_calibration_leaves_the_probes_recording_out_of_the_round_cost(target, layer):
    """The probe times its own recording (staging, choices, record) and calibration
    subtracts it: a real round does none of it. Timing it leaves the log as it was."""
    text = [prompt(100, 8)]
    probe = ShapeProbe(layer, TreeShape((3, 3)), 31)
    rounds, _ = calibrate(probe, target, [text], Generation(30, ()), 0)
    assert probe.log_s > 0
    assert int(probe.log.count) == rounds.count  # the timing's records were taken back
