"""How many draft tokens each beam-tree shape would have accepted in recorded rounds.

A calibration round is a wide beam tree (``W`` nodes on each of ``D`` levels) that was
verified by the target. For every internal node it keeps the draft's ``W`` most likely
children with their log-probs, and for every node the target's choice of the next token.
That is enough to replay, for any narrower shape (widths <= W, depth <= D), the beam that
shape would have built from the same state and where the target's path leaves it:

- level l of a beam keeps the top-k_l of (parent score + token log-prob) over the children of
  level l-1 (REFERENCE.md section 3); a node's score is the sum of the draft log-probs on its
  root path, so it is the same in every tree that holds the node;
- every node of a narrow beam either is a node of the wide tree (its children and the
  target's choice after it are known) or lies outside it; an outside node is scored but has
  no known children, and if the target's path runs through one, the replay stops there
  (an accepted length that may be short by what lies below; rare, as the wide tree keeps
  the W best nodes of every level).

Sampling works the same way: accepting deterministic children one by one with probability
p(x) / (mass left) accepts exactly the child equal to a token drawn from p, so the recorded
choice after each node is such a draw, shared by every shape.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Shape = tuple[int, ...]


@dataclass(frozen=True)
class Rounds:
    """R recorded rounds of one wide beam tree with N+1 nodes, M internal, W children kept."""

    kid_tok: np.ndarray  # (R, M, W) int64: each internal node's W most likely draft tokens
    kid_lp: np.ndarray  # (R, M, W) float32: their draft log-probs, descending
    kid_node: np.ndarray  # (R, M, W) int64: the wide-tree node of that child, -1 if none
    choice: np.ndarray  # (R, N+1) int64: the target's next token after each node

    @classmethod
    def from_log(
        cls,
        tokens: np.ndarray,
        parents: np.ndarray,
        kid_tok: np.ndarray,
        kid_lp: np.ndarray,
        choice: np.ndarray,
    ) -> Rounds:
        """Rounds from the wide trees' tokens and parents (R, N+1) in level order."""
        n_rounds, n_internal, width = kid_tok.shape
        kid_node = np.full(kid_tok.shape, -1, dtype=np.int64)
        parent = parents[:, 1:]  # (R, N) every draft node's parent (internal, < M)
        rows = np.arange(n_rounds)[:, None]  # (R, 1)
        same = kid_tok[rows, parent] == tokens[:, 1:, None]  # (R, N, W) the child's slot
        r, j, k = np.nonzero(same)
        kid_node[r, parent[r, j], k] = j + 1
        return cls(kid_tok.astype(np.int64), kid_lp.astype(np.float32), kid_node, choice)

    @classmethod
    def concat(cls, parts: list[Rounds]) -> Rounds:
        """The rounds of several calibration decodes of the same wide tree, in order."""
        return cls(
            *(np.concatenate([getattr(p, f) for p in parts]) for f in cls.__dataclass_fields__)
        )

    @property
    def count(self) -> int:
        return self.kid_tok.shape[0]

    @property
    def width(self) -> int:
        return self.kid_tok.shape[2]


@dataclass(frozen=True)
class Beam:
    """One level of the replayed beam in every round."""

    node: np.ndarray  # (R, k) wide-tree node of each beam entry, -1 outside the wide tree
    score: np.ndarray  # (R, k) float32 cumulative draft log-prob, -inf for no entry
    truth: np.ndarray  # (R,) wide-tree node of the target's path at this depth, -1 once lost
    accepted: np.ndarray  # (R,) draft tokens of the target's path inside the beam so far


@dataclass(frozen=True)
class Candidates:
    """Children of a beam, best first: the next level is a prefix of them."""

    node: np.ndarray  # (R, C)
    score: np.ndarray  # (R, C)
    hit_at: np.ndarray  # (R,) place of the target's next token on its path, C if absent
    hit_node: np.ndarray  # (R,) its wide-tree node (-1: outside the wide tree or absent)
    beam: Beam


def root_beam(rounds: Rounds) -> Beam:
    """The root alone, on the target's path, in every round."""
    n = rounds.count
    return Beam(
        node=np.zeros((n, 1), dtype=np.int64),
        score=np.zeros((n, 1), dtype=np.float32),
        truth=np.zeros(n, dtype=np.int64),
        accepted=np.zeros(n, dtype=np.int64),
    )


def expand(beam: Beam, rounds: Rounds) -> Candidates:
    """All known children of the beam's nodes, sorted by score (ties: beam order, rank)."""
    rows = np.arange(rounds.count)[:, None]  # (R, 1)
    known = (beam.node >= 0) & (beam.node < rounds.kid_tok.shape[1])  # (R, k) has children
    parent = np.where(known, beam.node, 0)  # (R, k)
    score = beam.score[..., None] + rounds.kid_lp[rows, parent]  # (R, k, W) float32
    score = np.where(known[..., None], score, np.float32(-np.inf)).reshape(rounds.count, -1)
    wanted = rounds.choice[rows[:, 0], np.maximum(beam.truth, 0)]  # (R,) target's next token
    on_path = known & (beam.truth >= 0)[:, None] & (beam.node == beam.truth[:, None])  # (R, k)
    hit = on_path[..., None] & (rounds.kid_tok[rows, parent] == wanted[:, None, None])
    order = np.argsort(-score, axis=1, kind="stable")  # (R, C) best first
    node = rounds.kid_node[rows, parent].reshape(score.shape)[rows, order]  # (R, C)
    hit = hit.reshape(score.shape)[rows, order]  # (R, C) at most one True per row
    hit_at = np.where(hit.any(1), hit.argmax(1), hit.shape[1])  # (R,)
    hit_node = np.where(hit_at < hit.shape[1], node[rows[:, 0], hit_at % hit.shape[1]], -1)
    return Candidates(node, score[rows, order], hit_at, hit_node, beam)


def take(cands: Candidates, width: int) -> Beam:
    """The next level: the ``width`` best candidates."""
    inside = cands.hit_at < width  # (R,) the target's next token made it into the level
    return Beam(
        node=cands.node[:, :width],
        score=cands.score[:, :width],
        truth=np.where(inside, cands.hit_node, -1),  # accepted outside the wide tree: stop
        accepted=cands.beam.accepted + inside,
    )


def accepted_per_round(rounds: Rounds, shape: Shape) -> np.ndarray:
    """(R,) draft tokens a beam of ``shape`` would have accepted in each round."""
    beam = root_beam(rounds)
    for width in shape:
        beam = take(expand(beam, rounds), width)
    return beam.accepted


def mean_accepted(rounds: Rounds, extensions: Callable[[Shape], list[int]]) -> dict[Shape, float]:
    """Mean accepted draft tokens of every shape reachable through ``extensions`` (widths that
    may follow a prefix), each level's beam computed once for all shapes sharing it. The
    empty shape (rounds without a draft, as vanilla decoding) accepts none."""
    out: dict[Shape, float] = {(): 0.0}

    def visit(prefix: Shape, beam: Beam) -> None:
        widths = extensions(prefix)
        if not widths:
            return
        cands = expand(beam, rounds)
        for width in widths:
            nxt = take(cands, width)
            out[prefix + (width,)] = float(nxt.accepted.sum()) / max(rounds.count, 1)
            visit(prefix + (width,), nxt)

    visit((), root_beam(rounds))
    return out


def rank_profile(rounds: Rounds) -> list[dict]:
    """Per depth d: how many rounds' target path reached depth d-1 inside the wide tree,
    and the share of them whose next token is the draft's rank-r child (r = W: none of
    the W best) -- the draft's acceptance profile."""
    rows = np.arange(rounds.count)
    node = np.zeros(rounds.count, dtype=np.int64)  # wide node of the path, -1 once lost
    out = []
    for depth in range(1, (rounds.choice.shape[1] - 1) // rounds.width + 1):
        alive = (node >= 0) & (node < rounds.kid_tok.shape[1])  # (R,)
        at = np.maximum(node, 0)
        match = rounds.kid_tok[rows, at] == rounds.choice[rows, at][:, None]  # (R, W)
        rank = np.where(match.any(1), match.argmax(1), rounds.width)  # (R,)
        counts = np.bincount(rank[alive], minlength=rounds.width + 1)  # (W+1,)
        reached = int(alive.sum())
        share = (counts / max(reached, 1)).round(4).tolist()
        out.append({"depth": depth, "rounds": reached, "rank_share": share})
        child = rounds.kid_node[rows, at, np.minimum(rank, rounds.width - 1)]  # (R,)
        node = np.where(alive & (rank < rounds.width), child, -1)
    return out
