"""The one decode loop: prefill, then rounds of propose -> verify -> accept -> commit.

Strategies differ only in how they propose and which acceptance rule they use; vanilla
decoding is the same loop with a proposal that holds only the root.
"""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.decoding.sampling import Generation
from longspec.decoding.state import DecodeState, RowResult
from longspec.decoding.strategy import Strategy
from longspec.metrics import PhaseTimer
from longspec.models.target import TargetModel


def pad_prompts(prompts: list[list[int]], pad_id: int, device) -> tuple[Tensor, Tensor]:
    """Right-pad prompts -> ids (B, T) and lengths (B,)."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
    ids = torch.full((len(prompts), int(lengths.max())), pad_id, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = torch.tensor(p, dtype=torch.long, device=device)
    return ids, lengths


def generate(
    target: TargetModel,
    strategy: Strategy,
    prompts: list[list[int]],
    gen: Generation,
    pad_id: int,
    timer: PhaseTimer | None = None,
) -> list[RowResult]:
    """Decode a batch of prompts (lists of ids); one RowResult per prompt."""
    timer = timer or PhaseTimer(target.device, enabled=False)
    ids, lengths = pad_prompts(prompts, pad_id, target.device)
    capacity = ids.shape[1] + gen.max_new_tokens + strategy.max_nodes + 2
    generator = torch.Generator(target.device).manual_seed(gen.seed)
    with timer.phase("prefill"):
        state = _prefill(target, strategy, ids, lengths, capacity, gen, generator)
    while not bool(state.done.all()):
        with timer.phase("draft"):
            prop = strategy.propose(state)
        with timer.phase("verify"):
            logits = target.verify(prop.tokens, prop.depths, prop.mask, state.cache)
        with timer.phase("accept"):
            _commit(state, strategy, prop.tokens, strategy.accept(prop, logits, state))
    return state.rows


def _prefill(target, strategy, ids, lengths, capacity, gen, generator) -> DecodeState:
    batch = ids.shape[0]
    cache = target.new_cache(batch, capacity)
    strategy.setup(target, batch)
    logits = target.prefill(ids, lengths, cache)  # (B, V)
    root = gen.pick(logits, generator)  # (B,)
    state = DecodeState(cache, gen, root, generator)
    state.rows = [RowResult([], 1, []) for _ in range(batch)]
    state.done = torch.zeros(batch, dtype=torch.bool)
    strategy.absorb_prompt(state, ids, lengths)
    for b, tok in enumerate(root.tolist()):
        state.append(b, [tok])
    return state


def _commit(state: DecodeState, strategy: Strategy, tokens: Tensor, acc) -> None:
    """Keep the accepted path in the caches and hand the new tokens to each row."""
    active = state.active().to(tokens.device)  # (B,)
    n_keep = torch.where(active, acc.n_accepted + 1, 0)  # root + accepted draft tokens
    base = state.cache.lengths.clone()  # (B,)
    state.cache.commit_path(acc.path, n_keep)
    kept = tokens.gather(1, acc.path)  # (B, P) root, accepted tokens, padding
    strategy.absorb_committed(state, kept, base, n_keep)
    # One device-to-host copy per round: accepted counts, kept tokens and bonus tokens.
    host = torch.cat([acc.n_accepted[:, None], kept, acc.bonus[:, None]], 1).tolist()
    for b, row_vals in enumerate(host):
        if state.done[b]:
            continue
        n_acc, row = row_vals[0], state.rows[b]
        row.target_forwards += 1
        row.accept_lengths.append(n_acc + 1)
        state.append(b, row_vals[2 : n_acc + 2] + [row_vals[-1]])
    state.root = acc.bonus
