"""MagicDec baseline: the target drafts for itself through a StreamingLLM view of its cache."""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.decoding.glide import chain_proposal
from longspec.decoding.proposal import Proposal
from longspec.decoding.state import DecodeState
from longspec.decoding.strategy import NoDraftState, accept_proposal
from longspec.verify import Acceptance


class MagicDec(NoDraftState):
    """Draft gamma tokens with the target seeing only ``sink`` first + ``window`` last
    committed positions (plus its own drafted tokens); verify with the full target."""

    needs_draft = False

    def __init__(self, gamma: int = 4, sink: int = 32, window: int = 1024):
        if gamma <= 0:
            raise ValueError(f"decode.gamma must be a positive integer, got {gamma}")
        self.gamma, self.sink, self.window = gamma, sink, window
        self.max_nodes = self.max_depth = gamma

    def streaming_keep(self, state: DecodeState) -> Tensor:
        """(B, 1, S) bool: slots the drafting target may read."""
        slots = torch.arange(state.cache.capacity, device=state.cache.lengths.device)  # (S,)
        recent = slots[None, :] >= state.cache.lengths[:, None] - self.window  # (B, S)
        return ((slots[None, :] < self.sink) | recent)[:, None, :]

    def _propose(self, root: Tensor, state: DecodeState) -> Proposal:
        keep = self.streaming_keep(state)
        tokens, qs = [root], []
        for i in range(self.gamma):
            logits = self.target.draft_chain(tokens[-1][:, None], i, state.cache, keep)  # (B, V)
            if not state.gen.greedy:
                qs.append(state.gen.probs(logits))
            tokens.append(state.gen.pick(logits, state.generator))
        return chain_proposal(torch.stack(tokens, 1), torch.stack(qs, 1) if qs else None)

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance:
        return accept_proposal(prop, logits, state, sampled_chain=True)
