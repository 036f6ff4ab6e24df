"""Acceptance rules: greedy against brute force, sampled rules against exact distributions.

The statistical tests use a Markov "target" and "draft" over a 6-token vocabulary (fixed
random tables of next-token distributions, at temperature 0.7 and 1.0). The speculative
process is simulated for whole rounds (propose -> verify -> accept) on 30000 rows at once
until each row has produced 3 tokens, and the empirical joint distribution of those 3
tokens (216 cells) is compared with the exact target distribution by a Pearson chi-square
test. The same test rejects the research code's tree rule (deterministic top-k children
accepted with min(1, p/q) as if sampled), and detects a 2% total-variation shift, so it
has the power to catch a wrong rule.

Measured p-values (pytest -s prints them; 30000 samples, seeded, CPU):
  tree (library rule)   T=0.7: 0.535  T=1.0: 0.927
  tree (literal rule)   T=0.7: 0.66   T=1.0: 0.434
  chain                 T=0.7: 0.988  T=1.0: 0.176
  wrong tree rule (min(1, p/q) on top-k children): 0 at both T (underflows float64)
  wrong chain (temperature ignored, as the research code's chain): 0
  2% TV shift (towards the draft / between the two likeliest cells): 20/20 rejected each.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from longspec.tree import TreeShape, ancestor_mask, node_depths, tree_depth
from longspec.verify import (
    Acceptance,
    Ancestry,
    accept_chain_sampled,
    accept_greedy,
    accept_tree_sampled,
    sampling_probs,
)

V, N_GEN, ROOT, SAMPLES = 6, 3, 0, 30_000
BEAM, GAMMA = TreeShape((2, 3)), 3  # tree shape; chain length
TEMPERATURES = [0.7, 1.0]
ALPHA_OK, ALPHA_WRONG = 1e-3, 1e-6


# ============================================================================ helpers


def brute_path(parents: list[int], node: int) -> list[int]:
    out = [node]
    while parents[out[-1]] >= 0:
        out.append(parents[out[-1]])
    return out[::-1]


@st.composite
def random_proposals(draw, vocab: int = 3):
    """(tokens, parents, seed, depth): a random level-order tree with tokens from a small
    vocabulary (so that matches and duplicate siblings are common)."""
    levels = draw(st.lists(st.integers(1, 4), min_size=0, max_size=4))
    shape = TreeShape(levels)
    batch = draw(st.integers(1, 3))
    parents, tokens = [], []
    for _ in range(batch):
        row, above = [-1], range(1)
        for sl in shape.level_slices:
            row += [draw(st.sampled_from(above)) for _ in range(sl.start, sl.stop)]
            above = range(sl.start, sl.stop)
        parents.append(row)
        tokens.append(
            draw(st.lists(st.integers(0, vocab - 1), min_size=len(row), max_size=len(row)))
        )
    seed = draw(st.integers(0, 2**31 - 1))
    return torch.tensor(tokens), torch.tensor(parents), seed, shape.depth


def check_valid_acceptance(acc: Acceptance, parents: torch.Tensor, depth: int) -> None:
    """path is a root path of n_accepted draft nodes, 0-padded to depth+1 columns."""
    assert acc.path.shape == (parents.shape[0], depth + 1)
    for b in range(parents.shape[0]):
        n = int(acc.n_accepted[b])
        path = acc.path[b].tolist()
        assert 0 <= n <= depth and path[0] == 0 and path[n + 1 :] == [0] * (depth - n)
        assert brute_path(parents[b].tolist(), path[n]) == path[: n + 1]


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected=5.0) -> float:
    """Pearson chi-square p-value of counts (K,) against exact probs (K,).

    Cells expected fewer than ``min_expected`` times are pooled into one (the usual
    validity rule); the p-value is the chi-square survival function, i.e. the regularised
    upper incomplete gamma Q(dof/2, stat/2).
    """
    expected = counts.sum() * probs.double()  # (K,)
    big = expected >= min_expected
    obs = torch.cat([counts[big].double(), counts[~big].sum()[None].double()])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    obs, exp = obs[exp > 0], exp[exp > 0]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = torch.tensor(len(exp) - 1.0, dtype=torch.float64)
    return float(torch.special.gammaincc(dof / 2, stat / 2))


# ============================================================================ top-p


def test_sampling_probs_validates_arguments():
    logits = torch.zeros(4)
    with pytest.raises(ValueError, match="temperature"):
        sampling_probs(logits, 0.0)
    with pytest.raises(ValueError, match="top_p"):
        sampling_probs(logits, 1.0, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        sampling_probs(logits, 1.0, top_p=1.5)


def test_sampling_probs_is_tempered_softmax_in_float32():
    logits = torch.randn(2, 3, 11, generator=torch.Generator().manual_seed(0)).bfloat16()
    probs = sampling_probs(logits, 0.5)
    assert probs.dtype == torch.float32 and probs.shape == (2, 3, 11)
    torch.testing.assert_close(probs, torch.softmax(logits.float() / 0.5, -1))


@given(st.integers(0, 10_000), st.floats(0.01, 1.0), st.floats(0.3, 2.0))
@settings(derandomize=True, deadline=None, max_examples=100)
def test_top_p_keeps_the_smallest_nucleus(seed, top_p, temperature):
    logits = torch.randn(4, 13, generator=torch.Generator().manual_seed(seed)) * 3
    probs = sampling_probs(logits, temperature, top_p)
    full = torch.softmax(logits / temperature, -1)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    for row in range(4):
        sorted_p, order = full[row].sort(descending=True)
        # smallest k with mass >= top_p (float32 rounding: allow the boundary both ways)
        k = int((sorted_p.cumsum(0) < top_p - 1e-6).sum()) + 1
        kept = probs[row] > 0
        assert k <= int(kept.sum()) <= k + 1 and kept[order[: int(kept.sum())]].all()
        assert (probs[row][~kept] == 0).all()  # outside the nucleus: exactly zero
        torch.testing.assert_close(probs[row][kept], full[row][kept] / full[row][kept].sum())


def test_tiny_top_p_keeps_the_argmax_only():
    logits = torch.tensor([[0.1, 2.0, 1.0, -1.0]])
    assert sampling_probs(logits, 1.0, top_p=1e-9).tolist() == [[0.0, 1.0, 0.0, 0.0]]


# ============================================================================ greedy


def one_hot_logits(best: list[list[int]], vocab: int = 8) -> torch.Tensor:
    """(B, N+1, V) logits whose argmax at node i is best[b][i]."""
    return torch.nn.functional.one_hot(torch.tensor(best), vocab).float()


def test_greedy_chain_accepts_the_matching_prefix():
    tokens = torch.tensor([[5, 1, 2, 3, 4]] * 3)
    parents = torch.tensor([[-1, 0, 1, 2, 3]] * 3)
    best = [[1, 2, 3, 4, 7], [1, 2, 6, 4, 7], [0, 2, 3, 4, 7]]  # all, 2, none match
    acc = accept_greedy(tokens, parents, one_hot_logits(best))
    assert acc.n_accepted.tolist() == [4, 2, 0]
    assert acc.path.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0], [0, 0, 0, 0, 0]]
    assert acc.bonus.tolist() == [7, 6, 0]


def test_greedy_tree_takes_the_deepest_path_and_lowest_index_on_ties():
    # root -> 1 (tok 3), 2 (tok 4); 1 -> 3 (tok 5); 2 -> 4 (tok 5), 5 (tok 6)
    tokens = torch.tensor([[0, 3, 4, 5, 5, 6]])
    parents = torch.tensor([[-1, 0, 0, 1, 2, 2]])
    # target wants 4 after root: only the second branch is correct, then 6 after node 2
    acc = accept_greedy(tokens, parents, one_hot_logits([[4, 0, 6, 0, 0, 1]]))
    assert acc.path.tolist() == [[0, 2, 5]] and acc.n_accepted.tolist() == [2]
    assert acc.bonus.tolist() == [1]
    # duplicate siblings (both token 3): both depth-2 children correct -> lowest index wins
    tokens = torch.tensor([[0, 3, 3, 5, 5, 6]])
    acc = accept_greedy(tokens, parents, one_hot_logits([[3, 5, 5, 2, 1, 0]]))
    assert acc.path.tolist() == [[0, 1, 3]] and acc.bonus.tolist() == [2]
    # duplicates where only the second one's subtree goes deeper: deepest wins
    acc = accept_greedy(tokens, parents, one_hot_logits([[3, 7, 6, 2, 1, 0]]))
    assert acc.path.tolist() == [[0, 2, 5]] and acc.bonus.tolist() == [0]


def test_greedy_vanilla_root_only():
    acc = accept_greedy(torch.tensor([[4], [2]]), torch.tensor([[-1], [-1]]), torch.randn(2, 1, 9))
    assert acc.path.shape == (2, 1) and acc.n_accepted.tolist() == [0, 0]


@given(random_proposals())
@settings(derandomize=True, deadline=None, max_examples=200)
def test_greedy_matches_brute_force(proposal):
    tokens, parents, seed, depth = proposal
    batch, n = tokens.shape
    logits = torch.randn(batch, n, 3, generator=torch.Generator().manual_seed(seed))
    acc = accept_greedy(tokens, parents, logits)
    check_valid_acceptance(acc, parents, depth)
    fixed = accept_greedy(tokens, parents, logits, max_depth=depth)  # sync-free variant
    for a, b in zip(
        (acc.path, acc.n_accepted, acc.bonus),
        (fixed.path, fixed.n_accepted, fixed.bonus),
        strict=True,
    ):
        assert torch.equal(a, b)
    best = logits.argmax(-1)
    for b in range(batch):
        links = parents[b].tolist()
        correct = [
            i
            for i in range(n)
            if all(int(tokens[b, k]) == int(best[b, links[k]]) for k in brute_path(links, i)[1:])
        ]
        want = max(correct, key=lambda i: (len(brute_path(links, i)), -i))
        n_acc = int(acc.n_accepted[b])
        assert n_acc == len(brute_path(links, want)) - 1  # no longer correct path exists
        assert int(acc.path[b, n_acc]) == want
        assert int(acc.bonus[b]) == int(best[b, want])


# ============================================================================ sampled: unit


@given(random_proposals())
@settings(derandomize=True, deadline=None, max_examples=100)
def test_tree_sampled_returns_valid_paths_of_possible_tokens(proposal):
    tokens, parents, seed, depth = proposal
    batch, n = tokens.shape
    gen = torch.Generator().manual_seed(seed)
    probs = torch.rand(batch, n, 3, generator=gen)
    probs[torch.rand(batch, n, 3, generator=gen) < 0.4] = 0.0  # sparse targets
    probs[..., 0] += 1e-3  # every row keeps some mass
    acc = accept_tree_sampled(tokens, parents, probs, gen)
    check_valid_acceptance(acc, parents, depth)
    fixed = accept_tree_sampled(tokens, parents, probs, gen, max_depth=depth)  # sync-free
    check_valid_acceptance(fixed, parents, depth)
    for b in range(batch):
        n_acc = int(acc.n_accepted[b])
        path = acc.path[b, : n_acc + 1].tolist()
        for parent, child in zip(path, path[1:], strict=False):
            assert probs[b, parent, tokens[b, child]] > 0  # never a token the target excludes
        assert probs[b, path[-1], acc.bonus[b]] > 0


def test_sampled_rules_are_deterministic_given_the_generator():
    gen = torch.Generator().manual_seed(3)
    tokens = torch.randint(0, 5, (4, 7), generator=gen)
    parents = torch.tensor([[-1, 0, 0, 1, 1, 2, 4]] * 4)
    probs = torch.rand(4, 7, 5, generator=gen)
    q = torch.softmax(torch.randn(4, 6, 5, generator=gen), -1)
    for rule in (
        lambda g: accept_tree_sampled(tokens, parents, probs, g),
        lambda g: accept_chain_sampled(tokens, q, probs, g),
    ):
        a, b = rule(torch.Generator().manual_seed(9)), rule(torch.Generator().manual_seed(9))
        assert torch.equal(a.path, b.path) and torch.equal(a.bonus, b.bonus)


def test_tree_sampled_with_one_hot_target_equals_greedy():
    tokens = torch.tensor([[0, 3, 4, 5, 5, 6]])
    parents = torch.tensor([[-1, 0, 0, 1, 2, 2]])
    best = one_hot_logits([[4, 0, 6, 0, 0, 1]])
    acc = accept_tree_sampled(tokens, parents, best, torch.Generator().manual_seed(0))
    greedy = accept_greedy(tokens, parents, best)
    assert torch.equal(acc.path, greedy.path) and torch.equal(acc.bonus, greedy.bonus)


def test_tree_sampled_duplicate_sibling_is_never_taken():
    # children 1 and 2 both carry token 3; only node 2 has a child. A target certain of 3
    # must take node 1 (the first to carry it): a second chance at the same token would
    # bias the output towards the draft.
    tokens = torch.tensor([[0, 3, 3, 1]]).expand(200, -1)
    parents = torch.tensor([[-1, 0, 0, 2]]).expand(200, -1)
    probs = torch.full((200, 4, 5), 0.2)
    probs[:, 0] = torch.tensor([0.0, 0.0, 0.0, 1.0, 0.0])
    acc = accept_tree_sampled(tokens, parents, probs, torch.Generator().manual_seed(0))
    assert (acc.path[:, 1] == 1).all() and (acc.n_accepted == 1).all()


def test_chain_sampled_edge_cases():
    gen = torch.Generator().manual_seed(0)
    tokens = torch.tensor([[0, 1, 2, 3]] * 50)
    q = torch.softmax(torch.randn(50, 3, 5, generator=gen), -1)
    # p == q (target == draft): every draft token is accepted
    p = torch.cat([q, torch.full((50, 1, 5), 0.2)], 1)
    acc = accept_chain_sampled(tokens, q, p, gen)
    assert (acc.n_accepted == 3).all() and acc.path.tolist() == [[0, 1, 2, 3]] * 50
    # target certain of token 4 first: rejected at once, the residual is that token
    p = torch.full((50, 4, 5), 0.2)
    p[:, 0] = torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0])
    acc = accept_chain_sampled(tokens, q, p, gen)
    assert (acc.n_accepted == 0).all() and (acc.bonus == 4).all() and (acc.path == 0).all()
    # p <= q everywhere (p sums below 1, as only rounding can make it): the residual
    # max(p - q, 0) is empty, so the bonus falls back to p itself
    p = torch.cat([q[:, :1] * 1e-3, torch.full((50, 1, 5), 0.2)], 1)  # (50, 2, 5)
    acc = accept_chain_sampled(tokens[:, :2], q[:, :1], p, gen)
    rejected = acc.n_accepted == 0
    assert rejected.sum() > 40
    assert (q[:, 0].gather(1, acc.bonus[:, None])[rejected] > 0).all()


# ============================================================================ sampled: statistics


def markov_tables(temperature: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Target P and draft Q (V, V): row a = next-token distribution after token a."""
    gen = torch.Generator().manual_seed(seed)
    target_logits = torch.randn(V, V, generator=gen) * 1.5
    draft_logits = target_logits + torch.randn(V, V, generator=gen)  # related, not equal
    return sampling_probs(target_logits, temperature), sampling_probs(draft_logits, temperature)


def exact_joint(target: torch.Tensor) -> torch.Tensor:
    """(V**3,) P(t1, t2, t3 | ROOT), index t1*V*V + t2*V + t3."""
    return (target[ROOT][:, None, None] * target[:, :, None] * target[None]).flatten()


def beam_trees(draft: torch.Tensor, shape: TreeShape) -> tuple[torch.Tensor, torch.Tensor]:
    """The draft's beam tree for every root token: tokens, parents (V, N+1).

    Level l keeps the top-k_l (parent cumulative log-prob + token log-prob) children over
    all (parent, token) pairs, as the project's TreeDecoding does.
    """
    logq = draft.log()
    all_tokens, all_parents = [], []
    for root in range(V):
        tokens, parents, scores, level = [root], [-1], [0.0], [0]
        for width in shape.levels:
            cands = [(scores[i] + float(logq[tokens[i], x]), i, x) for i in level for x in range(V)]
            top = sorted(cands, key=lambda c: -c[0])[:width]
            level = list(range(len(tokens), len(tokens) + width))
            tokens += [x for _, _, x in top]
            parents += [i for _, i, _ in top]
            scores += [s for s, _, _ in top]
        all_tokens.append(tokens)
        all_parents.append(parents)
    return torch.tensor(all_tokens), torch.tensor(all_parents)


Round = Callable[[torch.Tensor, torch.Generator], tuple[Acceptance, torch.Tensor]]


def simulate(one_round: Round, seed: int) -> torch.Tensor:
    """Run rounds on SAMPLES rows until each produced N_GEN tokens -> counts (V**3,).

    one_round(root (B,), gen) -> (acceptance, proposal tokens (B, N+1)).
    """
    gen = torch.Generator().manual_seed(seed)
    root = torch.full((SAMPLES,), ROOT)
    out = torch.full((SAMPLES, N_GEN * (max(BEAM.depth, GAMMA) + 1) + 1), -1)  # last: discard
    count = torch.zeros(SAMPLES, dtype=torch.long)
    for _ in range(N_GEN):  # every round yields >= 1 token
        acc, tokens = one_round(root, gen)
        width = acc.path.shape[1]
        kept = tokens.gather(1, acc.path)[:, 1:]  # (B, D) accepted tokens, then padding
        k = torch.arange(width)  # (D+1,)
        emitted = torch.cat([kept, acc.bonus[:, None]], 1)  # (B, D+1)
        emitted = torch.where(k == acc.n_accepted[:, None], acc.bonus[:, None], emitted)
        pos = torch.where(k <= acc.n_accepted[:, None], count[:, None] + k, out.shape[1] - 1)
        out.scatter_(1, pos, emitted)
        count += acc.n_accepted + 1
        root = acc.bonus
    assert (count >= N_GEN).all()
    first = out[:, :N_GEN]  # (B, 3)
    cells = (first * torch.tensor([V * V, V, 1])).sum(1)
    return torch.bincount(cells, minlength=V**N_GEN)


def tree_round(target, draft, rule) -> Round:
    trees, links = beam_trees(draft, BEAM)

    def one_round(root, gen):
        tokens, parents = trees[root], links[root]  # (B, N+1) deterministic from the root
        probs = target[tokens]  # (B, N+1, V) target's next-token distribution at each node
        return rule(tokens, parents, probs, gen, draft[tokens]), tokens

    return one_round


def chain_round(target, draft, verify_target=None) -> Round:
    verify_target = target if verify_target is None else verify_target

    def one_round(root, gen):
        tokens, q = [root], []
        for _ in range(GAMMA):  # the draft samples its chain from q
            q.append(draft[tokens[-1]])
            tokens.append(torch.multinomial(q[-1], 1, generator=gen)[:, 0])
        tokens = torch.stack(tokens, 1)  # (B, g+1)
        probs = verify_target[tokens]  # (B, g+1, V)
        return accept_chain_sampled(tokens, torch.stack(q, 1), probs, gen), tokens

    return one_round


def library_tree_rule(tokens, parents, probs, gen, draft_q):
    return accept_tree_sampled(tokens, parents, probs, gen, max_depth=BEAM.depth)


def literal_tree_rule(tokens, parents, probs, gen, draft_q, wrong=False):
    """The rule as written in REFERENCE.md, vectorised over rows: at each node try the
    children in order, accept x with p(x) / (mass left), else p(x) = 0; sample the bonus
    from what is left. ``wrong=True``: the research code's defect, the chain rule applied
    to deterministic top-k children (accept with min(1, p/q), else p = norm(max(p-q, 0))).
    """
    batch, n, _ = probs.shape
    rows = torch.arange(batch)
    depth = tree_depth(parents)
    node = torch.zeros(batch, dtype=torch.long)
    alive = torch.ones(batch, dtype=torch.bool)
    path = torch.zeros(batch, depth + 1, dtype=torch.long)
    n_acc = torch.zeros(batch, dtype=torch.long)
    bonus = torch.zeros(batch, dtype=torch.long)
    for d in range(depth + 1):
        p, q = probs[rows, node].clone(), draft_q[rows, node]  # (B, V)
        moved = torch.zeros(batch, dtype=torch.bool)
        for j in range(1, n):
            trying = alive & ~moved & (parents[:, j] == node)
            x = tokens[:, j, None]  # (B, 1)
            u = torch.rand(batch, generator=gen)
            px = p.gather(1, x)[:, 0]
            if wrong:
                take = trying & (u * q.gather(1, x)[:, 0] < px)
                rest = (p / p.sum(-1, keepdim=True) - q).clamp_min(0)
                rest = torch.where(rest.sum(-1, keepdim=True) > 0, rest, p)
            else:
                take = trying & (u * p.sum(-1) < px)  # p(x) / (mass left), p unnormalised
                rest = p.scatter(1, x, 0.0)
            p = torch.where((trying & ~take)[:, None], rest, p)
            moved |= take
            node = torch.where(take, j, node)
        p = torch.where(p.sum(-1, keepdim=True) > 0, p, probs[rows, node])  # rounding only
        draw = torch.multinomial(p, 1, generator=gen)[:, 0]
        bonus = torch.where(alive & ~moved, draw, bonus)
        if d < depth:
            path[:, d + 1] = torch.where(moved, node, 0)
        n_acc += moved.long()
        alive = moved
    return Acceptance(path, n_acc, bonus)


def wrong_tree_rule(tokens, parents, probs, gen, draft_q):
    return literal_tree_rule(tokens, parents, probs, gen, draft_q, wrong=True)


def report(name: str, temperature: float, pvalue: float) -> float:
    print(f"\n{name:<22} T={temperature}: p = {pvalue:.3g}")
    return pvalue


@pytest.mark.parametrize("temperature", TEMPERATURES)
@pytest.mark.parametrize("rule", [library_tree_rule, literal_tree_rule], ids=["lib", "literal"])
def test_tree_sampling_is_lossless(temperature, rule):
    target, draft = markov_tables(temperature)
    counts = simulate(tree_round(target, draft, rule), seed=1)
    pvalue = chi_square_pvalue(counts, exact_joint(target))
    assert report(f"tree ({rule.__name__})", temperature, pvalue) > ALPHA_OK


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_chain_sampling_is_lossless(temperature):
    target, draft = markov_tables(temperature)
    counts = simulate(chain_round(target, draft), seed=2)
    pvalue = chi_square_pvalue(counts, exact_joint(target))
    assert report("chain", temperature, pvalue) > ALPHA_OK


@pytest.mark.parametrize("temperature", TEMPERATURES)
def test_wrong_tree_rule_is_rejected(temperature):
    target, draft = markov_tables(temperature)
    counts = simulate(tree_round(target, draft, wrong_tree_rule), seed=1)
    pvalue = chi_square_pvalue(counts, exact_joint(target))
    assert report("wrong tree (p/q top-k)", temperature, pvalue) < ALPHA_WRONG


def test_chain_that_ignores_temperature_is_rejected():
    target, draft = markov_tables(0.7)
    untempered, _ = markov_tables(1.0)  # same logits at T = 1
    counts = simulate(chain_round(target, draft, verify_target=untempered), seed=2)
    pvalue = chi_square_pvalue(counts, exact_joint(target))
    assert report("wrong chain (no T)", 0.7, pvalue) < ALPHA_WRONG


@pytest.mark.parametrize("direction", ["towards_draft", "top_two_cells"])
def test_chi_square_detects_a_two_percent_shift(direction):
    """Power: SAMPLES draws from a distribution 0.02 away in total variation are rejected
    at ALPHA_OK in at least 18 of 20 trials."""
    target, draft = markov_tables(1.0)
    exact = exact_joint(target).double()
    if direction == "towards_draft":  # where a rule biased towards the draft goes
        other = exact_joint(draft).double()
        shifted = exact + 0.02 / (0.5 * (other - exact).abs().sum()) * (other - exact)
    else:  # between the two likeliest cells: the hardest place for chi-square
        top = exact.topk(2).indices
        shifted = exact.clone()
        shifted[top[0]] -= 0.02
        shifted[top[1]] += 0.02
    torch.testing.assert_close(0.5 * (shifted - exact).abs().sum(), torch.tensor(0.02).double())
    gen = torch.Generator().manual_seed(0)
    rejected = 0
    for _ in range(20):
        draws = torch.multinomial(shifted, SAMPLES, replacement=True, generator=gen)
        counts = torch.bincount(draws, minlength=len(exact))
        rejected += chi_square_pvalue(counts, exact) < ALPHA_OK
    print(f"\n2% TV shift {direction}: rejected {rejected}/20")
    assert rejected >= 18


# ============================================================================ ancestry


@settings(max_examples=80, deadline=None)
@given(random_proposals())
def test_rules_read_off_the_ancestor_mask_equal_the_walks(proposal):
    """Given the proposal's mask and depths, the rules skip their walks up the tree; the
    result must be the same path, count and bonus (greedy, and sampled with one seed)."""
    tokens, parents, seed, depth = proposal
    tree = Ancestry(ancestor_mask(parents), node_depths(parents))
    logits = torch.randn(*tokens.shape, 3, generator=torch.Generator().manual_seed(seed))
    pairs = [tuple(accept_greedy(tokens, parents, logits, depth, t) for t in (None, tree))]
    probs = torch.softmax(logits, -1)
    walked, read = (
        accept_tree_sampled(tokens, parents, probs, torch.Generator().manual_seed(seed), depth, t)
        for t in (None, tree)
    )
    pairs.append((walked, read))
    for a, b in pairs:
        assert torch.equal(a.path, b.path) and torch.equal(a.n_accepted, b.n_accepted)
        assert torch.equal(a.bonus, b.bonus)
        check_valid_acceptance(b, parents, depth)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@settings(max_examples=40, deadline=None)
@given(random_proposals())
def test_greedy_rule_on_cuda_runs_the_kernel_and_equals_the_cpu_rule(proposal):
    """On CUDA, greedy acceptance with the ancestry goes through the accept kernels
    (accept_kernel_checks.py compares them under the interpreter); same result as on CPU,
    with float16 logits full of exact ties."""
    tokens, parents, seed, depth = proposal
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randint(0, 3, (*tokens.shape, 5000), generator=gen).half()  # 2 chunks
    want = accept_greedy(tokens, parents, logits, depth)
    tree = Ancestry(ancestor_mask(parents).cuda(), node_depths(parents).cuda())
    got = accept_greedy(tokens.cuda(), parents.cuda(), logits.cuda(), depth, tree)
    assert torch.equal(got.path.cpu(), want.path)
    assert torch.equal(got.n_accepted.cpu(), want.n_accepted)
    assert torch.equal(got.bonus.cpu(), want.bonus)
