"""The contract of a decoding strategy and the acceptance rule shared by all of them."""

from __future__ import annotations

import itertools
from typing import Protocol

from torch import Tensor

from longspec.decoding.proposal import Proposal
from longspec.decoding.sampling import Generation
from longspec.decoding.state import DecodeState, RowResult
from longspec.metrics import PhaseTimer
from longspec.models.target import TargetModel
from longspec.verify import (
    Acceptance,
    Ancestry,
    accept_chain_sampled,
    accept_greedy,
    accept_tree_sampled,
)


class Strategy(Protocol):
    """How one decoding method proposes tokens and keeps its own state in step."""

    needs_draft: bool
    max_nodes: int  # draft nodes per round (the cache keeps room for them)

    def plan(self, prompts: list[list[int]]) -> None:
        """The prompts a run is about to decode, before its first decode (a hint: tuning
        may look at them; decoding never depends on it). Optional: the runner skips a
        strategy without it."""

    def setup(self, target: TargetModel, batch: int) -> None:
        """Allocate per-batch state (draft caches) before the prompt is prefilled."""

    def absorb_prompt(self, state: DecodeState, ids: Tensor, lengths: Tensor) -> None:
        """See the prompts (B, T) right-padded to lengths (B,) once the target cached them."""

    def propose(self, state: DecodeState) -> Proposal: ...

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance: ...

    def absorb_committed(
        self, state: DecodeState, kept: Tensor, base: Tensor, n_keep: Tensor
    ) -> None:
        """Tokens kept (B, P) at positions base + [0, n_keep) are now committed."""


def announce(strategy: object, prompts: list[list[int]]) -> None:
    """Hand a run's prompts to ``strategy.plan`` before its first decode, if it has one
    (the hook is optional: vanilla and transformers' ``generate`` need no look ahead)."""
    plan = getattr(strategy, "plan", None)
    if plan is not None:
        plan(prompts)


def accept_proposal(
    prop: Proposal, logits: Tensor, state: DecodeState, sampled_chain: bool
) -> Acceptance:
    """Greedy: longest path matching the target's argmax. Sampling: the lossless rule that
    fits how the drafts were made (sampled chain tokens or deterministic top-k children)."""
    tree = Ancestry(prop.mask, prop.depths)
    if state.gen.greedy:
        return accept_greedy(prop.tokens, prop.parents, logits, prop.max_depth, tree)
    probs = state.gen.probs(logits)  # (B, N+1, V)
    if sampled_chain:
        return accept_chain_sampled(prop.tokens, prop.draft_probs, probs, state.generator)
    return accept_tree_sampled(
        prop.tokens, prop.parents, probs, state.generator, prop.max_depth, tree
    )


_SERIALS = itertools.count()


class LoopStrategy:
    """Base of the strategies that run in the project's decode loop.

    Subclasses implement ``_propose(root, state)``; greedy proposals of a static target
    run as one captured CUDA graph per batch shape.
    """

    max_nodes = 0
    max_depth = 0

    def propose(self, state: DecodeState) -> Proposal:
        target = self.target
        if not state.gen.greedy or target.graphs is None:
            return self._propose(state.root, state)
        key = (*self.graph_key(), tuple(state.root.shape), state.cache.k.data_ptr())
        tensors = target.run_static(key, lambda r: self._propose(r, state).tensors(), state.root)
        return Proposal(*tensors, max_depth=self.max_depth)

    def _propose(self, root: Tensor, state: DecodeState) -> Proposal:
        raise NotImplementedError

    def graph_key(self) -> tuple:
        """Names this strategy object in graph keys: a captured graph holds its buffers and
        shape, so another object (even of the same class and shape, or one that reuses a
        freed object's address) must never replay it."""
        serial = self.__dict__.get("_graph_serial")
        if serial is None:
            serial = self.__dict__["_graph_serial"] = next(_SERIALS)
        return type(self).__name__, serial

    def graph_state(self) -> list[Tensor]:
        """Tensors a graph warm-up may change that must be restored (see the loop)."""
        return []

    def generate(
        self,
        target: TargetModel,
        prompts: list[list[int]],
        gen: Generation,
        pad_id: int,
        timer: PhaseTimer | None = None,
    ) -> list[RowResult]:
        from longspec.decoding.loop import generate  # the loop imports this module

        return generate(target, self, prompts, gen, pad_id, timer)


class NoDraftState(LoopStrategy):
    """Mixin for strategies that keep no state beside the target cache."""

    def setup(self, target: TargetModel, batch: int) -> None:
        self.target = target

    def absorb_prompt(self, state: DecodeState, ids: Tensor, lengths: Tensor) -> None:
        return None

    def absorb_committed(
        self, state: DecodeState, kept: Tensor, base: Tensor, n_keep: Tensor
    ) -> None:
        return None
