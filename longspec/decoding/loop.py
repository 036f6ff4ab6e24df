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
    fused = target.graphs is not None and target.fuse_rounds and gen.greedy
    while not bool(state.done.all()):
        if fused:
            with timer.phase("round"):
                _fused_round(target, strategy, state)
            continue
        with timer.phase("draft"):
            prop = strategy.propose(state)
        with timer.phase("verify"):
            logits = target.verify(prop.tokens, prop.depths, prop.mask, state.cache)
        with timer.phase("accept"):
            _commit(state, strategy, prop.tokens, strategy.accept(prop, logits, state))
    return state.rows


def _device_round(target, strategy, state: DecodeState, root: Tensor, active: Tensor) -> Tensor:
    """A whole greedy round on the device: propose, verify, accept, commit.

    Returns (B, 2 + P) = [accepted count, kept path tokens (root first), bonus] per row.
    """
    prop = strategy._propose(root, state)
    logits = target._verify(prop.tokens, prop.depths, prop.mask, state.cache)
    acc = strategy.accept(prop, logits, state)
    n_keep = torch.where(active, acc.n_accepted + 1, 0)  # (B,)
    base = state.cache.lengths.clone()
    state.cache.commit_path(acc.path, n_keep)
    kept = prop.tokens.gather(1, acc.path)  # (B, P)
    strategy.absorb_committed(state, kept, base, n_keep)
    return torch.cat([acc.n_accepted[:, None], kept, acc.bonus[:, None]], 1)


def _fused_round(target, strategy, state: DecodeState) -> None:
    """Replay the round as one CUDA graph; one device-to-host copy per round.

    Warm-up runs of the capture would commit garbage, so the committed lengths and the
    strategy's own position records are restored after them (the keys/values they write
    lie in slots that nothing visible reads).
    """
    active = (~state.done).to(state.root.device)
    key = ("round", type(strategy).__name__, tuple(state.root.shape), state.cache.k.data_ptr())
    out = target.graphs.run(
        key,
        lambda r, a: _device_round(target, strategy, state, r, a),
        state.root,
        active,
        restore=[state.cache.lengths, *strategy.graph_state()],
    )
    host = out.tolist()
    state.root = out[:, -1].clone()
    _record(state, host)


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
    _record(state, torch.cat([acc.n_accepted[:, None], kept, acc.bonus[:, None]], 1).tolist())
    state.root = acc.bonus


def _record(state: DecodeState, host: list[list[int]]) -> None:
    """Rows of [accepted count, kept tokens (root first), bonus] -> each row's output."""
    for b, vals in enumerate(host):
        if state.done[b]:
            continue
        n_acc, row = vals[0], state.rows[b]
        row.target_forwards += 1
        row.accept_lengths.append(n_acc + 1)
        state.append(b, vals[2 : n_acc + 2] + [vals[-1]])
