"""Greedy speculative output is token-identical to vanilla greedy output (float32, CPU)."""

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from longspec.attention import sdpa_attention
from longspec.decoding.glide import ChainDecoding, TreeDecoding
from longspec.decoding.magicdec import MagicDec
from longspec.decoding.proposal import Proposal
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel
from longspec.tree import TreeShape, ancestor_mask

SHAPES = [(1,), (1, 1, 1, 1), (8,), (2, 2), (3, 1, 2), (4, 16, 16, 16, 16)]


def prompts_for(vocab: int, lengths, seed: int = 0) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randint(3, vocab, (n,), generator=gen).tolist() for n in lengths]


def run(target, strategy, prompts, max_new=24, eos=()):
    gen = Generation(max_new_tokens=max_new, eos_ids=tuple(eos))
    return [r.output_ids for r in strategy.generate(target, prompts, gen, pad_id=0)]


class OracleTree(TreeDecoding):
    """A tree whose first branch follows a known continuation for a random number of
    steps, so long accepted paths, partial paths and rejections are all exercised."""

    def __init__(self, draft, tree_shape, reference: list[list[int]], seed: int):
        super().__init__(draft, tree_shape)
        self.reference = reference
        self.gen = torch.Generator().manual_seed(seed)

    def _propose(self, root, state) -> Proposal:
        prop = super()._propose(root, state)
        tokens = prop.tokens.clone()
        for b, row in enumerate(state.rows):
            done = len(row.output_ids)
            truth = self.reference[b][done : done + self.shape.depth]
            good = int(torch.randint(0, len(truth) + 1, (1,), generator=self.gen))
            node = 0
            for depth in range(good):  # walk the first child of each node
                children = (prop.parents[b] == node).nonzero()
                if len(children) == 0:
                    break
                node = int(children[0])
                tokens[b, node] = truth[depth]
        mask = ancestor_mask(prop.parents)
        return Proposal(tokens, prop.parents, prop.depths, mask, max_depth=prop.max_depth)


def glide(target, seed=0):
    return random_glide(target.hf.config, seed, target.dtype, target.device)


@pytest.fixture(params=["tiny_llama", "tiny_qwen2"])
def tiny_target(request):
    model, _ = request.getfixturevalue(request.param)
    return TargetModel(model, sdpa_attention)


@pytest.mark.parametrize("shape", SHAPES)
def test_tree_matches_vanilla(tiny_target, shape):
    prompts = prompts_for(tiny_target.vocab_size, [37])
    want = run(tiny_target, Vanilla(), prompts)
    assert run(tiny_target, TreeDecoding(glide(tiny_target), shape), prompts) == want
    oracle = OracleTree(glide(tiny_target), shape, want, seed=1)
    assert run(tiny_target, oracle, prompts) == want


@pytest.mark.parametrize(
    "make", [lambda t: ChainDecoding(glide(t), 4), lambda t: MagicDec(3, 4, 8)]
)
def test_chain_strategies_match_vanilla(tiny_target, make):
    prompts = prompts_for(tiny_target.vocab_size, [50])
    assert run(tiny_target, make(tiny_target), prompts) == run(tiny_target, Vanilla(), prompts)


def test_batch_of_three_lengths_matches_one_at_a_time(tiny_target):
    prompts = prompts_for(tiny_target.vocab_size, [9, 40, 23], seed=3)
    single = [run(tiny_target, Vanilla(), [p])[0] for p in prompts]
    assert run(tiny_target, Vanilla(), prompts) == single
    for strategy in (
        TreeDecoding(glide(tiny_target), (4, 16, 16, 16, 16)),
        OracleTree(glide(tiny_target), (3, 3, 3), single, seed=5),
        ChainDecoding(glide(tiny_target), 3),
        MagicDec(4, 2, 6),
    ):
        assert run(tiny_target, strategy, prompts) == single


def test_per_row_eos_stops_only_that_row(tiny_target):
    prompts = prompts_for(tiny_target.vocab_size, [12, 30], seed=4)
    free = run(tiny_target, Vanilla(), prompts, max_new=16)
    eos = free[0][5]  # row 0 emits this token at step 5
    out = run(tiny_target, OracleTree(glide(tiny_target), (2, 2, 2), free, 2), prompts, 16, [eos])
    for row, full in zip(out, free, strict=True):
        cut = full.index(eos) + 1 if eos in full else len(full)
        assert row == full[:cut]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
    lengths=st.lists(st.integers(1, 60), min_size=1, max_size=3),
    seed=st.integers(0, 1000),
)
def test_random_shapes_and_prompts(tiny_llama, shape, lengths, seed):
    target = TargetModel(tiny_llama[0], sdpa_attention)
    prompts = prompts_for(target.vocab_size, lengths, seed)
    want = run(target, Vanilla(), prompts, max_new=12)
    oracle = OracleTree(glide(target, seed), tuple(shape), want, seed)
    assert run(target, oracle, prompts, max_new=12) == want


def test_draft_cache_is_constant_in_context(tiny_llama):
    target = TargetModel(tiny_llama[0], sdpa_attention)
    sizes = []
    for n in (1000, 3000):
        strategy = TreeDecoding(glide(target), (2, 2), window=64)
        run(target, strategy, prompts_for(target.vocab_size, [n]), max_new=4)
        sizes.append(strategy.dcache.nbytes)
    assert sizes[0] == sizes[1]


def test_tree_shape_levels_define_nodes():
    shape = TreeShape((4, 16, 16, 16, 16))
    assert shape.num_nodes == 68 and shape.depth == 5


@pytest.mark.slow
def test_smollm2_speculative_matches_vanilla(smollm2_target, pycode_prompts):
    target = smollm2_target
    prompts = [p[:1200] for p in pycode_prompts[:3]]
    want = run(target, Vanilla(), prompts, max_new=20)
    for strategy in (
        TreeDecoding(glide(target), (4, 16, 16, 16, 16)),
        ChainDecoding(glide(target), 4),
        MagicDec(4, 32, 1024),
        OracleTree(glide(target), (2, 2, 2, 2), want, seed=0),
    ):
        assert run(target, strategy, prompts, max_new=20) == want


@pytest.mark.parametrize(
    "make",
    [
        lambda t: Vanilla(),
        lambda t: TreeDecoding(glide(t), (4, 16, 16, 16, 16)),
        lambda t: ChainDecoding(glide(t), 4),
        lambda t: MagicDec(3, 4, 8),
    ],
)
def test_static_shape_mode_matches_dynamic(tiny_llama, make):
    """The graph-ready path (full-capacity attention, pooled caches, no host syncs inside a
    step) gives the same tokens, also when the pooled caches are reused across calls."""
    dynamic = TargetModel(tiny_llama[0], sdpa_attention)
    static = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    strategy = make(static)
    for lengths in ([33], [20, 45, 7], [33]):
        prompts = prompts_for(dynamic.vocab_size, lengths, seed=len(lengths))
        assert run(static, strategy, prompts) == run(dynamic, make(dynamic), prompts)


class WarmupGraphs:
    """Stands in for GraphCache on CPU: runs each step like a capture would (two warm-up
    runs on copies of the inputs, then restore), so fused rounds are tested here too."""

    def run(self, key, fn, *inputs, restore=None):
        saved = [t.clone() for t in restore or []]
        for _ in range(2):
            fn(*[x.clone() for x in inputs])
        for t, s in zip(restore or [], saved, strict=True):
            t.copy_(s)
        return fn(*inputs)

    def clear(self):
        return None


@pytest.mark.parametrize(
    "make",
    [
        lambda t: Vanilla(),
        lambda t: TreeDecoding(glide(t), (4, 16, 16)),
        lambda t: OracleTree(glide(t), (2, 3, 2), None, 0),
        lambda t: ChainDecoding(glide(t), 3),
        lambda t: MagicDec(3, 4, 8),
    ],
)
def test_fused_rounds_with_warmups_match_vanilla(tiny_llama, make):
    dynamic = TargetModel(tiny_llama[0], sdpa_attention)
    fused = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    fused.graphs = WarmupGraphs()
    prompts = prompts_for(dynamic.vocab_size, [25, 41], seed=9)
    want = run(dynamic, Vanilla(), prompts)
    strategy = make(fused)
    if isinstance(strategy, OracleTree):
        strategy.reference = want
    assert run(fused, strategy, prompts) == want


def test_draft_ring_keeps_each_rows_last_window_when_padded():
    """A right-padded row's ring holds its own last ``window`` positions, as when absorbed
    alone (the padding must not push the row's newest keys out)."""
    from longspec.cache import DraftCache

    def ring_after(length: int, width: int) -> dict[int, torch.Tensor]:
        cache = DraftCache(1, 1, 4, window=16, max_absorb=3, max_pending=4, dtype=torch.float32,
                           device="cpu")  # fmt: skip
        positions = torch.arange(width)[None]  # (1, T)
        k = positions[None, :, :, None].float().expand(1, 1, width, 4)  # key = its position
        cache.absorb(k, k, positions, positions < length)
        kept = cache.ring_pos[0] >= 0
        return dict(zip(cache.ring_pos[0][kept].tolist(), cache.ring_k[0, 0][kept], strict=True))

    alone, padded = ring_after(100, 100), ring_after(100, 130)
    assert sorted(alone) == list(range(84, 100))
    assert sorted(padded) == sorted(alone)
    assert all(torch.equal(padded[p], alone[p]) for p in alone)


@pytest.mark.parametrize("static", [False, True])
def test_prompts_padded_for_the_prefill_decode_the_same(tiny_llama, static, monkeypatch):
    """Prefill columns past the longest prompt (shape buckets on CUDA) change nothing."""
    target = TargetModel(tiny_llama[0], sdpa_attention, static=static)
    prompts = prompts_for(target.vocab_size, [30, 17], seed=6)
    want = run(target, Vanilla(), prompts)
    tree = TreeDecoding(glide(target), (2, 2), window=8)
    plain = run(target, tree, prompts)
    monkeypatch.setattr(target, "prefill_width", lambda longest: longest + 13)
    assert run(target, Vanilla(), prompts) == want
    assert run(target, tree, prompts) == plain == want


def test_prefill_width_buckets_only_with_graphs(tiny_llama):
    target = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    assert [target.prefill_width(n) for n in (1, 70, 4000)] == [1, 70, 4000]  # CPU: no graphs
    target.graphs = object()  # as on CUDA
    widths = {n: target.prefill_width(n) for n in (1, 64, 65, 1000, 4000, 4096, 4097, 100000)}
    assert widths == {1: 64, 64: 64, 65: 128, 1000: 1024, 4000: 4096, 4096: 4096,
                      4097: 4608, 100000: 106496}  # fmt: skip
    assert len({target.prefill_width(n) for n in range(1, 8193)}) <= 16 + 16 + 8


class ReplayGraphs:
    """Stands in for GraphCache: the first function run under a key is what every later
    run with that key replays (a captured graph holds the buffers it was captured with)."""

    def __init__(self):
        self.graphs = {}

    def run(self, key, fn, *inputs, restore=None):
        return self.graphs.setdefault(key, fn)(*inputs)

    def clear(self):
        self.graphs.clear()


def test_graphs_are_never_replayed_for_another_strategy_object(tiny_llama):
    """Two tree strategies of the same class and shape on one target: the second must run
    its own draft, not replay the first one's graphs (their keys must differ)."""

    def accept_lengths(target, strategy, prompts):
        gen = Generation(max_new_tokens=16, eos_ids=())
        return [r.accept_lengths for r in strategy.generate(target, prompts, gen, pad_id=0)]

    shared = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    shared.graphs = ReplayGraphs()
    prompts = prompts_for(shared.vocab_size, [30], seed=2)
    first, second = (OracleTree(glide(shared, s), (2, 2), None, s) for s in (1, 2))
    first.reference = second.reference = run(shared, Vanilla(), prompts, max_new=16)
    accept_lengths(shared, first, prompts)
    fresh = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    fresh.graphs = ReplayGraphs()
    alone = OracleTree(glide(fresh, 2), (2, 2), first.reference, 2)
    assert accept_lengths(shared, second, prompts) == accept_lengths(fresh, alone, prompts)
