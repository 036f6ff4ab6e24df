"""The timings of one context: vanilla step, tree round, verification, its phases,
tree attention of one layer per backend, and cache memory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from longspec.attention.base import AttentionBackend
from longspec.bench.scale_setup import LongContext, kv_bytes, one_round
from longspec.bench.timing import Timing
from longspec.decoding.loop import _commit
from longspec.decoding.proposal import Proposal
from longspec.models.graphs import GraphCache
from longspec.tree import ancestor_mask

# Attention calls per captured graph when one layer's attention is timed. The repeats
# re-read one layer's keys, which at 8k (32 MiB in the 8B shape) fit the H200's L2; the
# verification reads each layer's from memory. The 70-token attention is compute-bound.
GRAPH_REPEAT = 10


def measure_context(lc: LongContext, timing: Timing, backends: dict[str, AttentionBackend]) -> dict:
    """Every measurement of one context (seconds and bytes)."""
    row: dict = {"context": lc.context}
    row |= time_rounds(lc, timing)
    lc.release_graphs()
    row |= time_phases(lc, timing)
    lc.release_graphs()
    row |= time_attention(lc, timing, backends)
    row |= memory(lc)
    return row


def time_rounds(lc: LongContext, timing: Timing) -> dict:
    """(a) one vanilla decode step and (b) one full tree round, as the decode loop runs them."""
    t, state = lc.target, lc.state
    vanilla = timing.median(lambda: one_round(t, lc.vanilla, state), before=lc.reset)
    tree = timing.median(lambda: one_round(t, lc.tree, state), before=lc.reset)
    return {"vanilla_step_s": vanilla, "tree_round_s": tree}


def time_phases(lc: LongContext, timing: Timing) -> dict:
    """(c) verification of the whole tree alone, and the phases of an unfused tree round:
    draft levels, verification (attention estimated from one layer), accept + commit."""
    t, state, tree = lc.target, lc.state, lc.tree
    lc.reset()
    first = tree.propose(state)  # graph outputs are overwritten by the next replay: copy
    prop = Proposal(*(x.clone() for x in first.tensors()), max_depth=first.max_depth)
    tokens, depths, mask = prop.tokens, prop.depths, prop.mask  # (1, N+1), ..., (1, N+1, N+1)
    draft = timing.median(lambda: tree.propose(state), before=lc.reset)
    verify = timing.median(lambda: t.verify(tokens, depths, mask, state.cache), before=lc.reset)
    logits = t.verify(tokens, depths, mask, state.cache).clone()  # (1, N+1, V)
    accept = timing.median(
        lambda: _commit(state, tree, tokens, tree.accept(prop, logits, state)), before=lc.reset
    )
    graphs = t.graphs is not None
    layer = _attention_seconds(lc, timing, t.attention, graphs, in_flight=True)
    attention = layer * t.n_layers
    return {
        "tree_nodes": tokens.shape[1],
        "verify_s": verify,
        "draft_s": draft,
        "verify_attention_s": attention,
        "verify_other_s": verify - attention,
        "accept_commit_s": accept,
    }


def time_attention(lc: LongContext, timing: Timing, backends: dict[str, AttentionBackend]) -> dict:
    """(d) tree attention of one layer over the whole context, per backend."""
    graphs = lc.target.graphs is not None
    return {
        "attention_layer_s": {
            name: _attention_seconds(lc, timing, backend, graphs)
            for name, backend in backends.items()
        }
    }


def _attention_seconds(
    lc: LongContext,
    timing: Timing,
    backend: AttentionBackend,
    graphs: bool,
    in_flight: bool = False,
) -> float:
    """Median seconds of :func:`attention_call`, eager or from a CUDA graph of
    ``GRAPH_REPEAT`` calls (a lone call's replay and input copies would weigh on a kernel
    of tens of microseconds, which the verification's own graph runs back to back)."""
    call, args = attention_call(lc, backend, in_flight)
    if not graphs:
        return timing.median(lambda: call(*args))

    def repeated(*inputs: Tensor) -> Tensor:
        for _ in range(GRAPH_REPEAT - 1):
            call(*inputs)
        return call(*inputs)

    pool = GraphCache()
    try:
        return timing.median(lambda: pool.run("attention", repeated, *args)) / GRAPH_REPEAT
    finally:
        pool.clear()
        torch.cuda.empty_cache()


def attention_call(
    lc: LongContext, backend: AttentionBackend, in_flight: bool
) -> tuple[Callable[..., Tensor], tuple[Tensor, ...]]:
    """(call, its tensors): one layer's attention of the tree's queries over layer 0's
    prefix (as the static target sees it: every slot, masked by length) plus the tree's
    own keys under its mask, from ``context`` committed tokens.

    ``in_flight``: the tree's keys are first written at slots context + i of the buffer and
    read from there (``Prefix.in_flight_cached``), as the target's verification runs them;
    else they come apart from the prefix, whose result merges with theirs (the hybrid split
    the backends are compared on)."""
    q, k_new, v_new, mask = _tree_inputs(lc)
    lc.reset()
    cache = lc.state.cache
    if in_flight:
        cache.write(0, k_new, v_new, cache.lengths)  # (1, Hkv, N+1, D) at slots context + i
    prefix = cache.prefix(0, lengths=cache.lengths, max_len=cache.capacity)
    prefix.in_flight_cached = in_flight

    def call(q: Tensor, k: Tensor, v: Tensor, m: Tensor) -> Tensor:
        return backend(q, prefix, k, v, m)  # (1, Hq, N+1, D)

    return call, (q, k_new, v_new, mask)


def _tree_inputs(lc: LongContext) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Random q (1, Hq, N+1, D), k/v (1, Hkv, N+1, D) and the tree mask (1, N+1, N+1)."""
    t = lc.target
    n = lc.tree.max_nodes + 1
    gen = torch.Generator(t.device).manual_seed(0)

    def rand(heads: int) -> Tensor:
        shape = (1, heads, n, t.head_dim)
        return torch.randn(shape, generator=gen, device=t.device, dtype=t.dtype)

    parents = _beam_parents(lc.tree.shape.levels, t.device)  # (1, N+1)
    mask = ancestor_mask(parents, len(lc.tree.shape.levels))  # (1, N+1, N+1)
    return rand(t.n_heads), rand(t.n_kv_heads), rand(t.n_kv_heads), mask


def _beam_parents(levels: tuple[int, ...], device: torch.device) -> Tensor:
    """(1, N+1) parents of a fixed tree of that shape: node i of a level hangs from node
    i mod (previous width) of the level above."""
    parents, start, width = [-1], 0, 1
    for size in levels:
        parents += [start + i % width for i in range(size)]
        start, width = start + width, size
    return torch.tensor([parents], device=device)


def memory(lc: LongContext) -> dict:
    """(e) bytes of the draft's cache (constant in the context) and of the target's KV."""
    cache, cfg = lc.state.cache, lc.target.hf.config
    return {
        "draft_cache_bytes": lc.tree.dcache.nbytes,
        "target_kv_bytes": kv_bytes(cfg, lc.context, lc.target.dtype),
        "target_kv_buffer_bytes": cache.nbytes,
    }
