"""Acceptance rules: which proposed tokens the target keeps, and the token it adds.

A proposal is ``tokens`` (B, N+1) and ``parents`` (B, N+1) in level order (see
``longspec.tree``); the target's output at node i is its distribution for the token that
follows node i. Every rule returns the accepted root path and one more token from the
target (the "bonus"), so each round commits between 1 and depth+1 tokens.

- Greedy: the deepest node whose every token equals the target's argmax after its parent.
- Sampling (lossless): the committed tokens have exactly the target's distribution,
  whatever the draft proposed. Deterministic top-k tree children and sampled chain tokens
  need different rules (using the chain rule on top-k children is the research code's
  defect, see REFERENCE.md section 7).

All rules are vectorised over the batch and loop only over depth; none reads a value back
to the host when the tree's depth is given.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from longspec.tree import node_depths, path_from_mask, path_to, tree_depth


@dataclass
class Acceptance:
    path: Tensor  # (B, depth+1) accepted node indices from the root (col 0 = 0), 0-padded
    n_accepted: Tensor  # (B,) accepted draft tokens; path[:, : n + 1] is valid
    bonus: Tensor  # (B,) token the target adds after the last accepted node


@dataclass
class Ancestry:
    """What a proposal already knows about its tree: the ancestor mask (B, N+1, N+1) and
    the depths (B, N+1). Given to the rules, it replaces walks up the tree (a few kernels
    per level each) by single reductions."""

    mask: Tensor
    depths: Tensor


def sampling_probs(logits: Tensor, temperature: float, top_p: float = 1.0) -> Tensor:
    """(..., V) logits -> (..., V) float32 probabilities at ``temperature``, nucleus ``top_p``.

    The nucleus is the smallest set of most likely tokens whose mass reaches ``top_p``
    (always at least one token); every other token gets probability exactly 0.
    """
    if not temperature > 0:
        raise ValueError(f"generation.temperature must be > 0 for sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise ValueError(f"generation.top_p must be in (0, 1], got {top_p}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (..., V)
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)  # (..., V)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of the strictly more likely tokens
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # the top token has before = 0
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)  # (..., V)
    return kept / kept.sum(-1, keepdim=True)


def _matching_path(
    tokens: Tensor,
    parents: Tensor,
    choice: Tensor,
    max_depth: int,
    first_only: bool,
    tree: Ancestry | None = None,
) -> Tensor:
    """(B, N+1) bool: the node and all its ancestors carry the token ``choice`` names.

    choice (B, N+1) is the token the target picks after each node. With ``first_only``
    only the lowest-index child carrying the choice counts (duplicate siblings), so at
    most one root path matches. ``tree`` (its ancestor mask) replaces the walk up the tree
    by one reduction.
    """
    up = parents.clamp_min(0)  # (B, N+1) root points at itself
    match = tokens == choice.gather(1, up)  # (B, N+1) node is what its parent's choice says
    match[:, 0] = True  # the root is committed already
    if first_only:
        n = tokens.shape[1]
        same_parent = parents[:, :, None] == parents[:, None, :]  # (B, N+1, N+1)
        earlier = torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril(-1)  # j < i
        match &= ~(same_parent & earlier & match[:, None, :]).any(-1)
    if tree is not None:  # every ancestor (and the node itself) matches
        return ~(tree.mask & ~match[:, None, :]).any(-1)  # (B, N+1)
    ok = match
    for _ in range(max_depth):  # after k steps: the node and its k nearest ancestors match
        ok = match & ok.gather(1, up)
    return ok


def _deepest(
    ok: Tensor, parents: Tensor, max_depth: int, tree: Ancestry | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Deepest node with ok (ties: lowest index) -> (path (B, D+1), n_accepted, node)."""
    n = ok.shape[1]
    depth = node_depths(parents, max_depth) if tree is None else tree.depths  # (B, N+1)
    order = torch.arange(n, device=ok.device)  # (N+1,)
    score = torch.where(ok, depth * n - order, -1)  # deeper first, then lower index
    node = score.argmax(-1)  # (B,) the root (score 0) at worst
    if tree is None:
        path, length = path_to(parents, node, max_depth + 1)
    else:
        path, length = path_from_mask(tree.mask, node, max_depth + 1)
    return path, length - 1, node


def accept_greedy(
    tokens: Tensor,
    parents: Tensor,
    logits: Tensor,
    max_depth: int | None = None,
    tree: Ancestry | None = None,
) -> Acceptance:
    """Deepest node whose whole root path equals the target's argmax (ties: lowest index).

    Lossless for greedy decoding: every committed token (path and bonus) is the argmax of
    the target given exactly the tokens before it, i.e. what plain greedy decoding emits.
    tokens, parents (B, N+1); logits (B, N+1, V). ``max_depth`` (the tree's depth) avoids
    host reads, so the rule can run inside a CUDA graph; ``tree`` saves walking the tree,
    and on CUDA runs the rule as two kernels (``longspec.decoding.accept_kernel``).
    """
    max_depth = tree_depth(parents) if max_depth is None else max_depth
    if tree is not None and _on_kernel(logits):
        from longspec.decoding.accept_kernel import accept_greedy_kernel

        return accept_greedy_kernel(tokens, parents, logits, tree.mask, tree.depths, max_depth)
    if tokens.shape[1] == 1:  # the root alone (vanilla): the argmax after it
        root = torch.zeros_like(tokens)  # (B, 1) the path: the root
        return Acceptance(root, root[:, 0], logits[:, 0].argmax(-1))
    best = logits.argmax(-1)  # (B, N+1) target's choice after each node
    ok = _matching_path(tokens, parents, best, max_depth, first_only=False, tree=tree)
    path, n_accepted, node = _deepest(ok, parents, max_depth, tree)
    return Acceptance(path, n_accepted, best.gather(1, node[:, None])[:, 0])


def _on_kernel(logits: Tensor) -> bool:
    """CUDA logits of a tree that fits one program of the accept kernel, in a dtype it
    compares exactly (float64 would be rounded to float32 there)."""
    if not logits.is_cuda or logits.dtype == torch.float64:  # no triton import on CPU
        return False
    from longspec.decoding.accept_kernel import MAX_NODES

    return logits.shape[1] <= MAX_NODES


def accept_tree_sampled(
    tokens: Tensor,
    parents: Tensor,
    probs: Tensor,
    generator: torch.Generator | None,
    max_depth: int | None = None,
    tree: Ancestry | None = None,
) -> Acceptance:
    """Lossless acceptance of deterministic (top-k) tree children; probs (B, N+1, V).

    The rule: at the current node (start at the root) with target distribution p, try its
    children in node order, accepting child x with probability p(x) / (mass left), else
    setting p(x) = 0; move to an accepted child and repeat; when every child fails, the
    bonus is drawn from the p that remains.

    Trying the children in turn this way is sampling one token y ~ p without replacement,
    stopped at the first success: child j is taken with probability exactly p(x_j) (0 for
    a repeated token), and the bonus is y with probability p(y) for every y that no child
    carries. So it is the same as drawing y ~ p once and moving to the first child that
    carries y (bonus y if none does), which is what is computed here, for every node at
    once: a draw y_i ~ probs[:, i] per node, then the one root path where each node
    carries its parent's draw. Every committed token is therefore a fresh sample from the
    target given the tokens before it: the output has exactly the target's distribution.
    The proposal only decides how many of those samples one round gets to keep; it is a
    deterministic function of the context, so it cannot bias them.
    """
    max_depth = tree_depth(parents) if max_depth is None else max_depth
    batch, n, vocab = probs.shape
    flat = probs.reshape(batch * n, vocab)  # (B*(N+1), V)
    drawn = torch.multinomial(flat, 1, generator=generator).view(batch, n)  # y_i ~ p_i
    ok = _matching_path(tokens, parents, drawn, max_depth, first_only=True, tree=tree)
    path, n_accepted, node = _deepest(ok, parents, max_depth, tree)
    return Acceptance(path, n_accepted, drawn.gather(1, node[:, None])[:, 0])


def accept_chain_sampled(
    tokens: Tensor, draft_probs: Tensor, probs: Tensor, generator: torch.Generator | None
) -> Acceptance:
    """Standard speculative sampling of a chain of sampled draft tokens.

    tokens (B, g+1): root then g tokens, token i+1 drawn from draft_probs[:, i] = q_i
    (B, g, V); probs (B, g+1, V) = the target's p at each node. Token x is accepted with
    probability min(1, p(x) / q(x)); at the first rejection the bonus is drawn from
    norm(max(p - q, 0)); if all are accepted, from p at the last node.

    Lossless: P(emit x) = q(x) min(1, p/q) + (1 - sum_y min(p, q)(y)) norm(max(p - q, 0))(x)
    = min(p, q)(x) + max(p - q, 0)(x) = p(x) at every position, given the tokens before.
    """
    batch, g1 = tokens.shape
    g, vocab = g1 - 1, probs.shape[-1]
    draft = tokens[:, 1:, None]  # (B, g, 1)
    p_x = probs[:, :g].gather(2, draft)[..., 0]  # (B, g) target prob of each draft token
    q_x = draft_probs.gather(2, draft)[..., 0]  # (B, g) draft prob it was sampled with
    u = torch.rand(batch, g, generator=generator, device=probs.device)  # (B, g)
    accepted = u * q_x < p_x  # u < p/q without dividing; min(1, .) because u < 1
    n_accepted = accepted.long().cumprod(1).sum(1)  # (B,) length of the accepted prefix
    # Bonus distribution at node n: max(p - q, 0) after a rejection, p after the last node.
    q_pad = torch.cat([draft_probs, draft_probs.new_zeros(batch, 1, vocab)], 1)  # (B, g+1, V)
    at = n_accepted[:, None, None].expand(-1, 1, vocab)  # (B, 1, V)
    p_n = probs.gather(1, at)[:, 0]  # (B, V)
    residual = (p_n - q_pad.gather(1, at)[:, 0].to(p_n.dtype)).clamp_min(0)  # (B, V)
    empty = residual.sum(-1, keepdim=True) <= 0  # p <= q everywhere: only by rounding
    residual = torch.where(empty, p_n, residual)
    bonus = torch.multinomial(residual, 1, generator=generator)[:, 0]  # (B,)
    cols = torch.arange(g1, device=tokens.device)  # (g+1,)
    path = torch.where(cols <= n_accepted[:, None], cols, 0)  # (B, g+1)
    return Acceptance(path, n_accepted, bonus)
