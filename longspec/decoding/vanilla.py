"""Vanilla decoding: one target forward per token (a proposal holding only the root)."""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.decoding.proposal import Proposal
from longspec.decoding.state import DecodeState
from longspec.decoding.strategy import NoDraftState, accept_proposal
from longspec.verify import Acceptance


class Vanilla(NoDraftState):
    needs_draft = False
    max_nodes = 0

    def _propose(self, root: Tensor, state: DecodeState) -> Proposal:
        root = root[:, None]  # (B, 1)
        batch, device = root.shape[0], root.device
        return Proposal(
            tokens=root,
            parents=torch.full_like(root, -1),
            depths=torch.zeros_like(root),
            mask=torch.ones(batch, 1, 1, dtype=torch.bool, device=device),
        )

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance:
        return accept_proposal(prop, logits, state, sampled_chain=False)
