"""The target LLM run by the project's own forward over a loaded transformers model.

Weights, norms, MLPs and the rotary table (which carries Llama-3 / YaRN scaling) come
from the transformers model; attention, positions and the KV cache are ours, so a proposal
tree can be verified in one forward and its accepted path compacted in place.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from longspec.attention.base import AttentionBackend
from longspec.cache import KVCache
from longspec.models import cpu_linear
from longspec.models.fused_layer import FusedLayers, can_fuse
from longspec.models.graphs import GraphCache
from longspec.models.rotary import apply_rotary


def module_device(module: nn.Module) -> torch.device:
    """The device of a module's first parameter (or buffer)."""
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    raise ValueError(f"{type(module).__name__} has no parameters to place")


# Rotary types whose cos/sin at a position do not depend on the other positions of a call
# ("dynamic" and "longrope" rescale by the longest position seen), so one table serves.
TABLE_ROPE_TYPES = ("default", "linear", "llama3", "yarn")


def placed(tensors: tuple, device: torch.device, memo: dict) -> tuple:
    """``tensors`` (None allowed) on ``device``, copied once per device (memo)."""
    if device not in memo:
        memo[device] = tuple(None if t is None else t.to(device) for t in tensors)
    return memo[device]


class TargetModel:
    """Explicit prefill / verify forwards of a Llama- or Qwen2-family causal LM.

    A model split over GPUs (``device_map``) runs each layer on its own device: hidden
    states move from layer to layer, each layer's KV cache lives on that layer's device,
    and embeddings, rotary tables and logits come back to :attr:`device` (the head's).
    """

    def __init__(self, hf_model: nn.Module, attention: AttentionBackend, static: bool = False):
        """``static``: full-capacity attention and pooled caches, so steps have static
        shapes and no host synchronisation; on CUDA they then run as CUDA graphs. A split
        model is never static (no graphs across devices)."""
        cfg = hf_model.config
        self.hf = hf_model
        self.body = hf_model.model  # embed_tokens, layers, norm, rotary_emb
        self.lm_head = hf_model.get_output_embeddings()
        self.attention = attention
        self.n_layers = cfg.num_hidden_layers
        self.n_heads = cfg.num_attention_heads
        self.n_kv_heads = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.vocab_size = cfg.vocab_size
        self.layer_devices = [module_device(layer) for layer in self.body.layers]
        self.split = len({*self.layer_devices, self.device}) > 1
        self.static = static and not self.split
        self.fuse_rounds = True  # on CUDA graphs: a whole greedy round per graph replay
        self.graphs = GraphCache() if self.static and self.device.type == "cuda" else None
        self._pool: KVCache | None = None
        self._rotary_table: tuple[Tensor, Tensor] | None = None  # static: cos, sin (S, D)
        # Static on CUDA: decoder layers through fused kernels (plain path = reference).
        self.fused = (
            FusedLayers(self.body, attention, self.n_heads, self.n_kv_heads)
            if self.graphs is not None and can_fuse(hf_model)
            else None
        )

    @property
    def device(self) -> torch.device:
        return self.lm_head.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.lm_head.weight.dtype

    def embed(self, input_ids: Tensor) -> Tensor:
        """(B, T) ids -> (B, T, hidden) embeddings on :attr:`device` (shared with the GLIDE
        draft)."""
        table = self.body.embed_tokens
        return table(input_ids.to(table.weight.device)).to(self.device)

    def rotary(self, x: Tensor, positions: Tensor) -> tuple[Tensor, Tensor]:
        """cos, sin (B, T, D) of the target's rotary table at ``positions`` (B, T), on
        x's device."""
        if self._rotary_table is not None:  # positions stay below the pooled capacity
            cos, sin = self._rotary_table
            return cos[positions], sin[positions]  # (B, T, D) gathers: two kernels
        cos, sin = self.body.rotary_emb(x, positions)
        return cos.to(x.device), sin.to(x.device)

    def _table_for(self, capacity: int) -> tuple[Tensor, Tensor] | None:
        """cos, sin (capacity, D) of positions 0 .. capacity - 1, as the rotary module
        computes them one position at a time (None for rotary types that rescale by the
        longest position of a call). Made with each pooled cache: a static step then
        gathers its rows instead of recomputing them (six kernels fewer per forward)."""
        rotary = self.body.rotary_emb
        if getattr(rotary, "rope_type", "default") not in TABLE_ROPE_TYPES:
            return None
        positions = torch.arange(capacity, device=self.device)[None]  # (1, S)
        probe = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = rotary(probe, positions)  # (1, S, D)
        return cos[0], sin[0]

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        """An empty cache; in static mode the pooled one (so captured graphs stay valid)."""
        if not self.static:
            return self._alloc_cache(batch, capacity)
        pool = self._pool
        if pool is None or pool.batch != batch or pool.capacity < capacity:
            self._pool = pool = None  # free before allocating the larger one
            if self.graphs is not None:
                self.graphs.clear()
            self._rotary_table = None
            pool = self._pool = self._alloc_cache(batch, -(-capacity // 256) * 256)
            self._rotary_table = self._table_for(pool.capacity)
        pool.lengths.zero_()
        return pool

    def _alloc_cache(self, batch: int, capacity: int) -> KVCache:
        devices = self.layer_devices if self.split else None
        return KVCache(
            self.n_layers,
            batch,
            self.n_kv_heads,
            capacity,
            self.head_dim,
            self.dtype,
            self.device,
            layer_devices=devices,
        )

    def run_static(self, key: tuple, fn, *inputs: Tensor):
        """fn(*inputs), replayed as a CUDA graph when this target captures graphs."""
        if self.graphs is None:
            return fn(*inputs)
        return self.graphs.run(key, fn, *inputs)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: Tensor,
        positions: Tensor,
        cache: KVCache,
        start: Tensor,
        new_mask: Tensor | None,
        keep: Tensor | None = None,
    ) -> Tensor:
        """Hidden states (B, T, hidden) after the final norm, for tokens in flight.

        input_ids/positions (B, T); keys and values are written to slots start[b] + t, and
        every query sees the cached slots [0, start[b]) (further limited by ``keep``) plus
        the tokens in flight under ``new_mask`` (B, T, T) (None: causal). The committed
        lengths of the cache are not changed here.
        """
        # Static: every slot, masked by length (no sync). Else one host sync per forward.
        used = cache.capacity if self.static else cache.check_room(start, input_ids.shape[1])
        x = self.embed(input_ids)  # (B, T, hidden)
        cos, sin = self.rotary(x, positions)  # (B, T, D)
        if self.fused is not None:
            prefix_args = (keep, start, used)
            return self.fused.forward(x, cos, sin, cache, prefix_args, start, new_mask)
        inputs, memo = (cos, sin, start, new_mask, keep), {}
        for idx, layer in enumerate(self.body.layers):
            if self.split:  # this layer's inputs on its device
                x = x.to(self.layer_devices[idx])
                cos, sin, start, new_mask, keep = placed(inputs, x.device, memo)
            prefix = cache.prefix(idx, keep, lengths=start, max_len=used)
            x = self._layer(idx, layer, x, cos, sin, cache, prefix, start, new_mask)
        norm = self.body.norm
        return norm(x.to(norm.weight.device)).to(self.device)

    def _layer(self, idx, layer, x, cos, sin, cache, prefix, start, new_mask) -> Tensor:
        attn = layer.self_attn
        h = layer.input_layernorm(x)
        q = self._heads(cpu_linear.linear(attn.q_proj, h), self.n_heads)  # (B, Hq, T, D)
        k = self._heads(cpu_linear.linear(attn.k_proj, h), self.n_kv_heads)  # (B, Hkv, T, D)
        v = self._heads(cpu_linear.linear(attn.v_proj, h), self.n_kv_heads)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        cache.write(idx, k, v, start)  # past each row's length: hidden from the prefix rule
        prefix.in_flight_cached = True
        o = self.attention(q, prefix, k, v, new_mask)
        o = o.transpose(1, 2).flatten(2)  # (B, T, Hq*D)
        x = x + cpu_linear.linear(attn.o_proj, o)  # (B, T, hidden)
        return x + self._mlp(layer.mlp, layer.post_attention_layernorm(x))

    @staticmethod
    def _mlp(mlp: nn.Module, h: Tensor) -> Tensor:
        """The layer's MLP; a gated one (gate/up/down) through ``cpu_linear``."""
        if all(hasattr(mlp, n) for n in ("gate_proj", "up_proj", "down_proj", "act_fn")):
            return cpu_linear.mlp(mlp, h)
        return mlp(h)

    def _heads(self, x: Tensor, n_heads: int) -> Tensor:
        """(B, T, H*D) -> (B, H, T, D)."""
        return x.unflatten(-1, (n_heads, self.head_dim)).transpose(1, 2)

    @torch.inference_mode()
    def logits(self, hidden: Tensor) -> Tensor:
        """(B, T, hidden) -> (B, T, V) float32 logits."""
        hidden = hidden.to(self.device)
        return cpu_linear.linear(self.lm_head, hidden, max_rows=None).float()

    def prefill_width(self, longest: int) -> int:
        """Columns a prefill of prompts up to ``longest`` tokens is padded to.

        With CUDA graphs, prompt lengths round up to 16 buckets per power of two (at least
        64 tokens apart; at most ~6% padding): every new prefill shape leaves host-side
        state behind (GEMM heuristics, kernel launchers, about 1.5 MB each, measured on
        the H200), so a long run over prompts of every length would grow without bound.
        Padded columns are never seen: their keys/values lie past the committed length.
        """
        if self.graphs is None or longest <= 0:
            return longest
        step = max(64, (1 << (longest - 1).bit_length()) // 16)
        return -(-longest // step) * step

    def prefill(self, input_ids: Tensor, lengths: Tensor, cache: KVCache) -> Tensor:
        """Fill an empty cache with right-padded prompts (B, T); last-token logits (B, V)."""
        positions = torch.arange(input_ids.shape[1], device=input_ids.device).expand_as(input_ids)
        hidden = self.forward(input_ids, positions, cache, cache.lengths, None)  # (B, T, hidden)
        cache.commit(lengths)
        last = hidden[
            torch.arange(hidden.shape[0], device=hidden.device), lengths - 1
        ]  # (B, hidden)
        return self.logits(last)

    def verify(self, tokens: Tensor, depths: Tensor, tree_mask: Tensor, cache: KVCache) -> Tensor:
        """Logits (B, N+1, V) of a proposal tree (root first) placed after each row's prefix.

        Node i sits at position length + depth[i]; its keys/values land at slot length + i,
        ready for ``KVCache.commit_path`` once the accepted path is known.
        """
        key = ("verify", tokens.shape, cache.data_ptr())
        return self.run_static(
            key, lambda t, d, m: self._verify(t, d, m, cache), tokens, depths, tree_mask
        )

    def _verify(self, tokens: Tensor, depths: Tensor, tree_mask: Tensor, cache: KVCache) -> Tensor:
        positions = cache.lengths[:, None] + depths  # (B, N+1)
        hidden = self.forward(tokens, positions, cache, cache.lengths, tree_mask)
        return self.logits(hidden)

    def draft_chain(self, tokens: Tensor, offset: int, cache: KVCache, keep: Tensor) -> Tensor:
        """Self-speculation step (MagicDec): logits (B, V) of one token seen through ``keep``.

        tokens (B, 1) sits ``offset`` tokens after the committed prefix; the earlier drafted
        tokens are already at slots length + [0, offset) and stay visible.
        """
        start = cache.lengths + offset  # (B,)
        hidden = self.forward(tokens, start[:, None], cache, start, None, keep=keep)
        return self.logits(hidden[:, -1])
