"""Vanilla decoding: one target forward per token (a proposal holding only the root)."""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.decoding.proposal import Proposal
from longspec.decoding.state import DecodeState
from longspec.decoding.strategy import NoDraftState, accept_proposal
from longspec.verify import Acceptance, Ancestry, accept_greedy


class Vanilla(NoDraftState):
    """A proposal of the root alone. Its constant parts (parents, depths, mask) are made
    once per batch size and device, so a captured step does not refill them every replay,
    and greedy acceptance is the target's argmax after the root."""

    needs_draft = False
    max_nodes = 0

    def __init__(self) -> None:
        self._constants: dict[tuple, tuple[Tensor, Tensor, Tensor]] = {}

    def _propose(self, root: Tensor, state: DecodeState) -> Proposal:
        root = root[:, None]  # (B, 1)
        parents, depths, mask = self._root_only(root.shape[0], root.device)
        return Proposal(tokens=root, parents=parents, depths=depths, mask=mask)

    def _root_only(self, batch: int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
        """parents -1 (B, 1), depths 0 (B, 1), mask (B, 1, 1) True; made by the first call
        (an eager one: graphs are captured after their warm-up runs), then reused."""
        key = (batch, device)
        if key not in self._constants:
            long = torch.long
            self._constants[key] = (
                torch.full((batch, 1), -1, dtype=long, device=device),
                torch.zeros(batch, 1, dtype=long, device=device),
                torch.ones(batch, 1, 1, dtype=torch.bool, device=device),
            )
        return self._constants[key]

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance:
        if not state.gen.greedy:
            return accept_proposal(prop, logits, state, sampled_chain=False)
        tree = Ancestry(prop.mask, prop.depths)  # on CUDA: the accept kernels
        return accept_greedy(prop.tokens, prop.parents, logits, 0, tree)
