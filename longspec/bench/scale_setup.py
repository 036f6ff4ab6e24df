"""A target and its strategies over a KV cache filled to a long context without a prefill.

Prefilling 128k tokens through the model would take longer than everything measured after
it; attention cost depends only on how many cached keys it reads, so the cache is filled
with random keys/values and its lengths are set. The draft's ring gets the last window of
random tokens the same way (``GlideDraft.absorb``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PretrainedConfig, PreTrainedModel

from longspec.attention.base import AttentionBackend
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.loop import _commit, _fused_round
from longspec.decoding.sampling import Generation
from longspec.decoding.state import DecodeState, RowResult
from longspec.decoding.strategy import LoopStrategy
from longspec.decoding.vanilla import Vanilla
from longspec.models.glide import GlideLayer
from longspec.models.target import TargetModel


@dataclass
class LongContext:
    """One batch row whose target cache holds ``context`` committed tokens."""

    target: TargetModel
    tree: TreeDecoding
    vanilla: Vanilla
    state: DecodeState
    context: int

    def reset(self) -> None:
        """Back to ``context`` committed tokens (every round advances the length)."""
        self.state.cache.lengths.fill_(self.context)

    def release_graphs(self) -> None:
        """Drop the captured graphs (and their memory pools) before the next measurement."""
        if self.target.graphs is not None:
            self.target.graphs.clear()
            torch.cuda.empty_cache()


def long_context(
    hf: PreTrainedModel,
    draft: GlideLayer,
    attention: AttentionBackend,
    context: int,
    tree_shape: list[int],
    window: int = 512,
    graphs: bool = True,
    seed: int = 0,
    draft_vocab: int | None = None,
) -> LongContext:
    """Static target (CUDA graphs on a GPU unless ``graphs`` is off), tree and vanilla
    strategies, target cache and draft ring filled as if ``context`` tokens were decoded.
    ``draft_vocab``: the draft scores that many tokens (its ranking's first ids)."""
    target = TargetModel(hf, attention, static=True)
    if not graphs:
        target.graphs = None
    tree = TreeDecoding(draft, tree_shape, window, draft_vocab=draft_vocab)
    vanilla = Vanilla()
    cache = target.new_cache(1, context + tree.max_nodes + 2)
    tree.setup(target, 1)
    vanilla.setup(target, 1)
    gen = torch.Generator(target.device).manual_seed(seed)
    cache.k.normal_(generator=gen)  # (L, 1, Hkv, S, D)
    cache.v.normal_(generator=gen)
    _fill_ring(tree, context, target.vocab_size, gen)
    root = torch.randint(target.vocab_size, (1,), device=target.device, generator=gen)
    state = DecodeState(cache, Generation(2**62, ()), root, None)
    state.rows, state.done = [RowResult([], 1, [])], torch.zeros(1, dtype=torch.bool)
    out = LongContext(target, tree, vanilla, state, context)
    out.reset()
    return out


def _fill_ring(tree: TreeDecoding, context: int, vocab: int, gen: torch.Generator) -> None:
    """Absorb random tokens at the last ``window`` positions before ``context``."""
    device = tree.target.device
    positions = torch.arange(max(context - tree.window, 0), context, device=device)[None]
    ids = torch.randint(vocab, positions.shape, device=device, generator=gen)  # (1, W)
    tree.draft.absorb(tree.dcache, ids, positions, torch.ones_like(positions, dtype=torch.bool))


def one_round(target: TargetModel, strategy: LoopStrategy, state: DecodeState) -> None:
    """One greedy round exactly as ``decoding.loop.generate`` runs it: a fused CUDA graph
    when the target captures graphs, else propose -> verify -> accept -> commit."""
    if target.graphs is not None and target.fuse_rounds:
        _fused_round(target, strategy, state)
        return
    prop = strategy.propose(state)
    logits = target.verify(prop.tokens, prop.depths, prop.mask, state.cache)
    _commit(state, strategy, prop.tokens, strategy.accept(prop, logits, state))


def kv_bytes(config: PretrainedConfig, context: int, dtype: torch.dtype) -> int:
    """Target keys + values of every layer for ``context`` tokens."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * config.num_key_value_heads * head_dim
    return per_token * context * torch.finfo(dtype).bits // 8


def needed_bytes(config: PretrainedConfig, context: int, dtype: torch.dtype, nodes: int) -> int:
    """Rough device memory a context needs: its cache plus a few attention workspaces.

    A workspace is the worst backend's: keys and values expanded to every query head in
    float32, and float32 scores/probabilities of ``nodes`` queries over the context.
    """
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    expanded = 2 * heads * context * head_dim * 4
    scores = 3 * heads * nodes * context * 4
    return kv_bytes(config, context, dtype) + 3 * (expanded + scores)
