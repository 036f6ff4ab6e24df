"""Acceptance rules: which proposed tokens the target keeps, and the token it adds.

Greedy: the deepest node whose every ancestor matches the target's argmax.
Sampling (lossless): the committed tokens have exactly the target's distribution.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class Acceptance:
    path: Tensor  # (B, depth+1) accepted node indices from the root (col 0 = 0), 0-padded
    n_accepted: Tensor  # (B,) accepted draft tokens; path[:, : n + 1] is valid
    bonus: Tensor  # (B,) token the target adds after the last accepted node


def sampling_probs(logits: Tensor, temperature: float, top_p: float = 1.0) -> Tensor:
    """(..., V) logits -> float32 probabilities at ``temperature`` with nucleus ``top_p``."""
    if temperature <= 0:
        raise ValueError(f"generation.temperature must be > 0 for sampling, got {temperature}")
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    before = sorted_p.cumsum(-1) - sorted_p  # mass of strictly more likely tokens
    sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)  # keeps >= 1 token
    kept = torch.zeros_like(probs).scatter(-1, order, sorted_p)
    return kept / kept.sum(-1, keepdim=True)


def _depth_of(parents: Tensor, max_depth: int) -> Tensor:
    """(B, N+1) depth of every node (the tree is at most ``max_depth`` deep)."""
    depth = torch.zeros_like(parents)
    hop = parents.clone()
    for _ in range(max_depth):
        depth += (hop >= 0).long()
        hop = torch.where(hop >= 0, parents.gather(1, hop.clamp_min(0)), hop)
    return depth


def path_to(parents: Tensor, node: Tensor, n_draft: Tensor, max_depth: int) -> Tensor:
    """Root-to-node paths (B, max_depth+1): column 0 is the root, then the n_draft[b]
    draft nodes in order, then 0-padding. No host synchronisation."""
    up = [node]  # up[k] = k-th ancestor of node (0 once past the root)
    for _ in range(max_depth):
        up.append(parents.gather(1, up[-1][:, None])[:, 0].clamp_min(0))
    up_t = torch.stack(up, 1)  # (B, D+1)
    cols = torch.arange(max_depth + 1, device=node.device)  # (D+1,)
    back = (n_draft[:, None] - cols).clamp_min(0)  # column j holds ancestor n - j
    path = up_t.gather(1, back)
    return torch.where((cols >= 1) & (cols <= n_draft[:, None]), path, 0)


def tree_depth(parents: Tensor) -> int:
    """Depth of a proposal tree (one host synchronisation)."""
    return int(_depth_of(parents, parents.shape[1]).max())


def accept_greedy(
    tokens: Tensor, parents: Tensor, logits: Tensor, max_depth: int | None = None
) -> Acceptance:
    """Deepest node whose whole path equals the target's argmax (ties: lowest index)."""
    max_depth = tree_depth(parents) if max_depth is None else max_depth
    n_nodes = tokens.shape[1]
    best = logits.argmax(-1)  # (B, N+1) target's choice after each node
    depth = _depth_of(parents, max_depth)  # (B, N+1)
    # A node matches if its token is the target's choice after its parent.
    match = tokens == best.gather(1, parents.clamp_min(0))  # (B, N+1)
    match[:, 0] = True
    ok = match.clone()
    for _ in range(max_depth):  # a node is correct if it and every ancestor match
        ok = match & ok.gather(1, parents.clamp_min(0))
    order = torch.arange(n_nodes, device=tokens.device)
    score = torch.where(ok, depth * n_nodes - order, -1)
    node = score.argmax(-1)  # (B,) deepest correct node, lowest index among equals
    n_draft = depth.gather(1, node[:, None])[:, 0]
    path = path_to(parents, node, n_draft, max_depth)
    return Acceptance(path, n_draft, best.gather(1, node[:, None])[:, 0])


def _sample(p: Tensor, generator: torch.Generator | None) -> int:
    return int(torch.multinomial(p, 1, generator=generator))


def _uniform(generator: torch.Generator | None, device: torch.device) -> float:
    return float(torch.rand((), generator=generator, device=device))


def _tree_row(tokens, parents, probs, generator) -> tuple[list[int], int]:
    """One row of the deterministic-children rule. Returns (accepted nodes, bonus token).

    Trying children x1, x2, ... in turn, accepting xi with probability p(xi) / (mass left)
    and removing it otherwise, draws exactly one token from p (sampling without
    replacement, stopped at the first success); a token never proposed is drawn from what
    is left. So whichever child is taken, the committed token is distributed as p.
    """
    node, path = 0, []
    children_of = {}
    for i in range(1, tokens.shape[0]):
        children_of.setdefault(int(parents[i]), []).append(i)
    while True:
        p = probs[node].clone()
        moved = False
        for child in children_of.get(node, []):
            tok = int(tokens[child])
            mass = float(p.sum())
            if mass <= 0:
                break
            if _uniform(generator, p.device) * mass < float(p[tok]):
                node, moved = child, True
                path.append(child)
                break
            p[tok] = 0.0
        if not moved:
            if float(p.sum()) <= 0:  # all mass on rejected children: numerically impossible
                p = probs[node]
            return path, _sample(p / p.sum(), generator)


def _pack(paths: list[list[int]], bonus: list[int], width: int, device) -> Acceptance:
    path = torch.zeros(len(paths), width + 1, dtype=torch.long, device=device)
    for b, nodes in enumerate(paths):
        path[b, 1 : len(nodes) + 1] = torch.tensor(nodes, dtype=torch.long, device=device)
    n = torch.tensor([len(x) for x in paths], dtype=torch.long, device=device)
    return Acceptance(path, n, torch.tensor(bonus, dtype=torch.long, device=device))


def accept_tree_sampled(
    tokens: Tensor, parents: Tensor, probs: Tensor, generator: torch.Generator | None
) -> Acceptance:
    """Lossless acceptance of a tree of deterministic (top-k) children under probs (B, N+1, V)."""
    rows = [_tree_row(tokens[b], parents[b], probs[b], generator) for b in range(tokens.shape[0])]
    width = tree_depth(parents)
    return _pack([r[0] for r in rows], [r[1] for r in rows], width, tokens.device)


def _chain_row(tokens, q, p, generator) -> tuple[list[int], int]:
    """Standard speculative sampling of one chain row (tokens (g+1,), q (g, V), p (g+1, V))."""
    for i in range(q.shape[0]):
        tok = int(tokens[i + 1])
        ratio = float(p[i, tok]) / max(float(q[i, tok]), 1e-30)
        if _uniform(generator, p.device) >= min(1.0, ratio):
            residual = (p[i] - q[i]).clamp_min(0)
            residual = residual if float(residual.sum()) > 0 else p[i]
            return list(range(1, i + 1)), _sample(residual / residual.sum(), generator)
    return list(range(1, q.shape[0] + 1)), _sample(p[-1], generator)


def accept_chain_sampled(
    tokens: Tensor, draft_probs: Tensor, probs: Tensor, generator: torch.Generator | None
) -> Acceptance:
    """Speculative sampling: accept x with min(1, p(x)/q(x)), else resample norm(max(p-q, 0))."""
    rows = [
        _chain_row(tokens[b], draft_probs[b], probs[b], generator) for b in range(tokens.shape[0])
    ]
    return _pack([r[0] for r in rows], [r[1] for r in rows], tokens.shape[1] - 1, tokens.device)
