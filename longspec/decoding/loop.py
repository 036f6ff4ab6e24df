"""The one decode loop: prefill, then rounds of propose -> verify -> accept -> commit.

Strategies differ only in how they propose and which acceptance rule they use; vanilla
decoding is the same loop with a proposal that holds only the root.

NaN or inf target logits stop the batch with :class:`~longspec.errors.NonFiniteLogits`
naming the batch row and the decode step (0 = prefill, then the round); the runner names
the sample. The per-row finite flag rides in the one device-to-host copy that each step
makes anyway (no extra sync); when sampling, a non-finite row is drawn from zeros instead
so that the draw itself cannot fail before the error is raised.
"""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.decoding.sampling import Generation
from longspec.decoding.state import DecodeState, RowResult
from longspec.decoding.strategy import Strategy
from longspec.finite import finite_rows, raise_if_not_finite
from longspec.metrics import PhaseTimer
from longspec.models.target import TargetModel


def pad_prompts(
    prompts: list[list[int]], pad_id: int, device, width: int | None = None
) -> tuple[Tensor, Tensor]:
    """Right-pad prompts to ``width`` columns (default: the longest) -> ids (B, T) and
    lengths (B,)."""
    lengths = torch.tensor([len(p) for p in prompts], dtype=torch.long, device=device)
    width = int(lengths.max()) if width is None else width
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    for b, p in enumerate(prompts):
        ids[b, : len(p)] = torch.tensor(p, dtype=torch.long, device=device)
    return ids, lengths


def cache_capacity(prompt_len: int, gen: Generation, max_nodes: int) -> int:
    """KV slots one decode needs: the prompt, the budget, one round's nodes, root and bonus."""
    return prompt_len + gen.max_new_tokens + max_nodes + 2


def reserve_cache(
    target: TargetModel, prompts: list[list[int]], gen: Generation, nodes: int
) -> None:
    """Size a static target's pooled cache for a decode now, so that shorter runs before it
    (warm-ups, tuning) use the same buffers and their captured graphs stay valid."""
    if target.static:
        longest = target.prefill_width(max(len(p) for p in prompts))
        target.new_cache(len(prompts), cache_capacity(longest, gen, nodes))


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
    width = target.prefill_width(max(len(p) for p in prompts))
    ids, lengths = pad_prompts(prompts, pad_id, target.device, width)
    capacity = cache_capacity(ids.shape[1], gen, strategy.max_nodes)
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
            finite = finite_rows(logits)  # (B,) on the device; read with the round's copy
            logits = _drawable(logits, finite, gen)
        with timer.phase("accept"):
            acc = strategy.accept(prop, logits, state)
            _commit(state, strategy, prop.tokens, acc, finite)
    return state.rows


def _drawable(logits: Tensor, finite: Tensor, gen: Generation) -> Tensor:
    """Sampling: rows that are not all finite replaced by zeros (a draw from NaN fails)."""
    if gen.greedy:
        return logits  # argmax of NaN is some index: no failure before the check
    return torch.where(finite.view(-1, *[1] * (logits.dim() - 1)), logits, 0.0)


def _device_round(target, strategy, state: DecodeState, root: Tensor, active: Tensor) -> Tensor:
    """A whole greedy round on the device: propose, verify, accept, commit.

    Returns (B, 3 + P) = [logits finite, accepted count, kept path tokens (root first),
    bonus] per row.
    """
    prop = strategy._propose(root, state)
    logits = target._verify(prop.tokens, prop.depths, prop.mask, state.cache)
    finite = finite_rows(logits)
    acc = strategy.accept(prop, logits, state)
    n_keep = torch.where(active, acc.n_accepted + 1, 0)  # (B,)
    base = state.cache.lengths.clone()
    state.cache.commit_path(acc.path, n_keep)
    kept = prop.tokens.gather(1, acc.path)  # (B, P)
    strategy.absorb_committed(state, kept, base, n_keep)
    return _round_output(finite, acc, kept)


def _round_output(finite: Tensor, acc, kept: Tensor) -> Tensor:
    """(B, 3 + P) long: [finite flag, accepted count, kept tokens, bonus] per row."""
    cols = [finite.long()[:, None], acc.n_accepted[:, None], kept, acc.bonus[:, None]]
    return torch.cat(cols, 1)


def _fused_round(target, strategy, state: DecodeState) -> None:
    """Replay the round as one CUDA graph; one device-to-host copy per round.

    Warm-up runs of the capture would commit garbage, so the committed lengths and the
    strategy's own position records are restored after them (the keys/values they write
    lie in slots that nothing visible reads).
    """
    active = (~state.done).to(state.root.device)
    key = ("round", *strategy.graph_key(), tuple(state.root.shape), state.cache.k.data_ptr())
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
    finite = finite_rows(logits)
    root = gen.pick(_drawable(logits, finite, gen), generator)  # (B,)
    host = torch.stack([finite.long(), root], 1).tolist()  # the prefill's one host copy
    raise_if_not_finite([bool(ok) for ok, _ in host], step=0)
    state = DecodeState(cache, gen, root, generator)
    state.rows = [RowResult([], 1, []) for _ in range(batch)]
    state.done = torch.zeros(batch, dtype=torch.bool)
    strategy.absorb_prompt(state, ids, lengths)
    for b, (_, tok) in enumerate(host):
        state.append(b, [tok])
    return state


def _commit(
    state: DecodeState, strategy: Strategy, tokens: Tensor, acc, finite: Tensor | None = None
) -> None:
    """Keep the accepted path in the caches and hand the new tokens to each row.

    ``finite`` (B,): whether each row's verify logits were all finite (None: not checked).
    """
    if finite is None:
        finite = torch.ones(tokens.shape[0], dtype=torch.bool, device=tokens.device)
    active = state.active().to(tokens.device)  # (B,)
    n_keep = torch.where(active, acc.n_accepted + 1, 0)  # root + accepted draft tokens
    base = state.cache.lengths.clone()  # (B,)
    state.cache.commit_path(acc.path, n_keep)
    kept = tokens.gather(1, acc.path)  # (B, P) root, accepted tokens, padding
    strategy.absorb_committed(state, kept, base, n_keep)
    # One device-to-host copy per round: finite flags, accepted counts, kept and bonus tokens.
    _record(state, _round_output(finite, acc, kept).tolist())
    state.root = acc.bonus


def _record(state: DecodeState, host: list[list[int]]) -> None:
    """Rows of [finite flag, accepted count, kept tokens (root first), bonus] -> each
    row's output; NonFiniteLogits when an active row's logits were not all finite."""
    flags = [bool(vals[0]) or bool(state.done[b]) for b, vals in enumerate(host)]
    if not all(flags):
        raise_if_not_finite(flags, step=state.rows[flags.index(False)].target_forwards)
    for b, vals in enumerate(host):
        if state.done[b]:
            continue
        n_acc, row = vals[1], state.rows[b]
        row.target_forwards += 1
        row.accept_lengths.append(n_acc + 1)
        state.append(b, vals[3 : n_acc + 3] + [vals[-1]])
