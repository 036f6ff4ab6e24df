"""LongSpec decoding with the GLIDE draft: beam trees (``tree``) and chains (``seq``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor

from longspec.autoshape.policy import shape_policy
from longspec.decoding.proposal import Proposal
from longspec.decoding.sampling import Generation
from longspec.decoding.state import DecodeState, RowResult
from longspec.decoding.strategy import LoopStrategy, accept_proposal
from longspec.metrics import PhaseTimer
from longspec.models.draft import GlideDraft
from longspec.models.glide import GlideLayer
from longspec.models.target import TargetModel
from longspec.tree import TreeShape, grow_level
from longspec.verify import Acceptance


def _draft_vocab_ids(draft: GlideLayer, size: int | None) -> Tensor | None:
    """The ``size`` most frequent token ids of the draft's ranking (None: all tokens)."""
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size <= 0:
        raise ValueError(f"decode.draft_vocab must be a positive integer or null, got {size!r}")
    if draft.token_ranking is None:
        raise ValueError(
            "decode.draft_vocab needs the draft's token ranking (token_counts.json beside the "
            "checkpoint; write it with python -m longspec.train.draft_vocab)"
        )
    return draft.token_ranking[:size]


class _GlideBase(LoopStrategy):
    """Keeps the draft's constant-size cache in step with the committed tokens."""

    needs_draft = True
    max_nodes = 0

    def __init__(self, draft: GlideLayer, window: int = 512, draft_vocab: int | None = None):
        """``draft_vocab``: the draft scores only the K most frequent tokens of its training
        text (lossless: see ``models.draft_vocab``); None scores the whole vocabulary."""
        self.layer = draft
        self.window = window
        self.vocab_ids = _draft_vocab_ids(draft, draft_vocab)

    def setup(self, target: TargetModel, batch: int) -> None:
        """Draft and its cache; a static target keeps one cache per batch size (graphs)."""
        self.target = target
        old = getattr(self, "dcache", None)
        if target.static and old is not None and old.ring_pos.shape[0] == batch:
            old.reset()
            return
        self.draft = GlideDraft(self.layer, target, target.attention, self.window, self.vocab_ids)
        self.dcache = self.draft.new_cache(batch, self.max_depth + 1, self.max_nodes + 1)

    def graph_state(self) -> list[Tensor]:
        return [self.dcache.ring_pos]

    def absorb_prompt(self, state: DecodeState, ids: Tensor, lengths: Tensor) -> None:
        positions = torch.arange(ids.shape[1], device=ids.device).expand_as(ids)  # (B, T)
        valid = positions < lengths[:, None]
        self.draft.absorb(self.dcache, ids, positions, valid)

    def absorb_committed(
        self, state: DecodeState, kept: Tensor, base: Tensor, n_keep: Tensor
    ) -> None:
        offsets = torch.arange(kept.shape[1], device=kept.device)  # (P,)
        valid = offsets[None, :] < n_keep[:, None]  # (B, P)
        self.draft.absorb(self.dcache, kept, base[:, None] + offsets, valid)

    def _root_scores(self, root: Tensor, state: DecodeState) -> Tensor:
        """Start a round: the root alone in the pending set; its draft scores (B, 1, K)
        over the draft's tokens (``draft.vocab_ids``)."""
        self.dcache.clear_pending()
        root = root[:, None]  # (B, 1)
        sees_self = torch.ones(root.shape[0], 1, 1, dtype=torch.bool, device=root.device)
        pos = state.cache.lengths[:, None]  # (B, 1) the root sits right after the prefix
        return self.draft.step_scores(self.dcache, state.cache, root, pos, sees_self)

    def _root_logits(self, root: Tensor, state: DecodeState) -> Tensor:
        """The root's draft logits over the whole vocabulary (B, V)."""
        return self.draft.full_logits(self._root_scores(root, state))[:, -1]


class TreeDecoding(_GlideBase):
    """Beam tree: level l keeps the top-k_l (parent log-prob + token log-prob) children.

    ``tree_shape`` is the nodes per level, or ``"auto"``: measure this device's costs and
    the draft's acceptance on held-out text of the first decode's prompts (and of more of
    the run's prompts, see ``plan``), then race the most promising shapes and use the
    fastest (``longspec.autoshape``; its settings come from ``auto``).
    """

    def __init__(
        self,
        draft: GlideLayer,
        tree_shape: Sequence[int] | str,
        window: int = 512,
        auto: Mapping[str, Any] | None = None,
        draft_vocab: int | None = None,
    ):
        super().__init__(draft, window, draft_vocab)
        self.policy = shape_policy(tree_shape, auto)
        self._set_shape(self.policy.initial)

    def _set_shape(self, shape: TreeShape) -> None:
        self.shape = shape
        self.max_nodes = shape.num_nodes
        self.max_depth = shape.depth

    def generate(
        self,
        target: TargetModel,
        prompts: list[list[int]],
        gen: Generation,
        pad_id: int,
        timer: PhaseTimer | None = None,
    ) -> list[RowResult]:
        """Decode with the policy's shape for these prompts (chosen before any timing)."""
        tunes = self.policy.tunes
        shape = self.policy.shape_for(self, target, prompts, gen, pad_id)
        if shape != self.shape or self.policy.tunes != tunes:  # tuning drops the graphs
            self._switch(shape, target, prompts, gen, pad_id)
        return super().generate(target, prompts, gen, pad_id, timer)

    def _switch(self, shape: TreeShape, target: TargetModel, prompts, gen, pad_id) -> None:
        """Use another shape: new draft buffers and graphs, captured here (untimed)."""
        self._set_shape(shape)
        self.__dict__.pop("dcache", None)  # setup allocates one for the new node count
        if target.graphs is None:
            return
        target.graphs.clear()  # graph keys do not name the shape
        super().generate(target, prompts, replace(gen, max_new_tokens=4), pad_id)

    def plan(self, prompts: list[list[int]]) -> None:
        """Hand the run's prompts to the shape policy (``auto`` may calibrate on them)."""
        self.policy.plan(prompts)

    def describe(self) -> dict:
        """Summary fields: what ``tree_shape=auto`` chose (nothing for a fixed shape)."""
        return self.policy.describe()

    def _children_scores(self, level: int, scores: Tensor) -> None:
        """Hook: the draft's scores (B, n, K) under the n nodes of ``level`` (columns:
        ``draft.vocab_ids``; ``draft.full_logits`` spreads them over the vocabulary)."""

    def _propose(self, root: Tensor, state: DecodeState) -> Proposal:
        if not self.shape.levels:  # no draft level (auto's pick when drafting does not pay)
            return chain_proposal(root[:, None], None)
        scores = self._root_scores(root, state)  # (B, 1, K)
        ids = self.draft.vocab_ids  # (K,) token of each score column, or None: the column
        batch, device = scores.shape[0], scores.device
        n_all = self.max_nodes + 1
        # Ancestor mask, filled level by level: a node sees what its parent sees, and itself.
        mask = torch.eye(n_all, dtype=torch.bool, device=device).expand(batch, -1, -1).clone()
        tokens = [root[:, None]]
        parents = [torch.full((batch, 1), -1, dtype=torch.long, device=device)]
        cum = torch.zeros(batch, 1, device=device)  # cumulative draft log-prob per node
        level_start, start = 0, 1  # first node of the parents' level, of the new level
        for level, width in enumerate(self.shape.levels):
            self._children_scores(level, scores)
            token, parent, cum = grow_level(scores, cum, width, ids, mask, level_start, start)
            tokens.append(token)  # (B, k)
            parents.append(parent)  # (B, k) node indices
            end = start + width
            if level + 1 < self.shape.depth:
                pos = state.cache.lengths[:, None] + level + 1  # (B, 1)
                scores = self.draft.step_scores(  # (B, k, K)
                    self.dcache, state.cache, tokens[-1], pos.expand(-1, width),
                    mask[:, start:end, :end],
                )  # fmt: skip
            level_start, start = start, end
        depths = torch.cat([torch.full_like(t, d) for d, t in enumerate(tokens)], 1)
        return Proposal(
            tokens=torch.cat(tokens, 1),
            parents=torch.cat(parents, 1),  # (B, N+1)
            depths=depths,  # (B, N+1) built on the device: no host copy inside a graph
            mask=mask,  # (B, N+1, N+1)
            max_depth=self.max_depth,
        )

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance:
        return accept_proposal(prop, logits, state, sampled_chain=False)


class ChainDecoding(_GlideBase):
    """Chain of gamma draft tokens: argmax when greedy, sampled from q otherwise."""

    def __init__(
        self, draft: GlideLayer, gamma: int = 4, window: int = 512, draft_vocab: int | None = None
    ):
        super().__init__(draft, window, draft_vocab)
        if gamma <= 0:
            raise ValueError(f"decode.gamma must be a positive integer, got {gamma}")
        self.gamma = gamma
        self.max_nodes = self.max_depth = gamma

    def _propose(self, root: Tensor, state: DecodeState) -> Proposal:
        logits = self._root_logits(root, state)  # (B, V)
        batch, device = logits.shape[0], logits.device
        tokens, qs = [root], []
        for i in range(self.gamma):
            if not state.gen.greedy:
                qs.append(state.gen.probs(logits))  # (B, V)
            tokens.append(state.gen.pick(logits, state.generator))
            if i + 1 < self.gamma:
                sees = torch.ones(batch, 1, i + 2, dtype=torch.bool, device=device)
                pos = state.cache.lengths[:, None] + i + 1
                logits = self.draft.step(self.dcache, state.cache, tokens[-1][:, None], pos, sees)[
                    :, -1
                ]
        return chain_proposal(torch.stack(tokens, 1), torch.stack(qs, 1) if qs else None)

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance:
        return accept_proposal(prop, logits, state, sampled_chain=True)


def chain_proposal(tokens: Tensor, draft_probs: Tensor | None) -> Proposal:
    """A chain tokens (B, g+1) as a tree: node i's parent is i - 1."""
    batch, n = tokens.shape
    idx = torch.arange(n, device=tokens.device)
    return Proposal(
        tokens=tokens,
        parents=(idx - 1).expand(batch, -1),
        depths=idx.expand(batch, -1),
        mask=torch.ones(n, n, dtype=torch.bool, device=tokens.device).tril().expand(batch, -1, -1),
        draft_probs=draft_probs,
        max_depth=n - 1,
    )
