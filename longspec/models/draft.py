"""GLIDE draft inference: a GlideLayer wired to the target's embeddings, rotary and head."""

from __future__ import annotations

import torch
from torch import Tensor

from longspec.attention.base import AttentionBackend, Prefix
from longspec.cache import DraftCache, KVCache
from longspec.models.draft_vocab import DraftHead
from longspec.models.glide import GlideLayer
from longspec.models.rotary import apply_rotary
from longspec.models.target import TargetModel


class GlideDraft:
    """Proposes tokens with one layer that reads the target's last-layer KV cache."""

    def __init__(
        self,
        layer: GlideLayer,
        target: TargetModel,
        attention: AttentionBackend,
        window: int,
        vocab_ids: Tensor | None = None,
    ):
        """``vocab_ids``: score only these tokens (see ``draft_vocab``); None = all."""
        self.layer = layer
        self.target = target
        self.attention = attention
        self.window = window
        self.head = None if vocab_ids is None else DraftHead(target.lm_head.weight, vocab_ids)
        self.fused = None  # CUDA graphs: projections and norms through the fused kernels
        if target.fused is not None:
            self.fused = FusedDraft(layer)

    def new_cache(self, batch: int, max_absorb: int, max_pending: int) -> DraftCache:
        d = self.layer.dims
        return DraftCache(
            batch,
            d.kv_heads,
            d.head_dim,
            self.window,
            max_absorb,
            max_pending,
            self.target.dtype,
            self.target.device,
        )

    @torch.inference_mode()
    def absorb(self, cache: DraftCache, tokens: Tensor, positions: Tensor, valid: Tensor) -> None:
        """Add committed tokens (B, T) at positions (B, T) where valid (B, T) to the ring."""
        if self.fused is not None:
            emb, h = self._embed_norm(tokens)  # (B, T, hidden) each
            cos, sin = self.target.rotary(emb, positions)  # (B, T, D)
            self.fused.absorb(cache, h, cos, sin, cache.ring_slots(positions, valid))
            return
        emb = self.target.embed(tokens)  # (B, T, hidden)
        cos, sin = self.target.rotary(emb, positions)  # (B, T, D)
        k, v = self.layer.self_kv(emb)  # (B, Hkv, T, D)
        cache.absorb(apply_rotary(k, cos, sin), v, positions, valid)

    @torch.inference_mode()
    def step(
        self,
        cache: DraftCache,
        target_cache: KVCache,
        tokens: Tensor,
        positions: Tensor,
        pending_mask: Tensor,
    ) -> Tensor:
        """Logits (B, T, V) over the whole vocabulary: :meth:`step_scores` spread by
        :meth:`full_logits`."""
        return self.full_logits(
            self.step_scores(cache, target_cache, tokens, positions, pending_mask)
        )

    @property
    def vocab_ids(self) -> Tensor | None:
        """(K,) the token of each column of :meth:`step_scores` (None: every token, in order)."""
        return None if self.head is None else self.head.ids

    @torch.inference_mode()
    def full_logits(self, scores: Tensor) -> Tensor:
        """(..., K) scores -> (..., V) logits over the whole vocabulary (-inf off the set)."""
        return scores if self.head is None else self.head.expand(scores)

    @torch.inference_mode()
    def step_scores(
        self,
        cache: DraftCache,
        target_cache: KVCache,
        tokens: Tensor,
        positions: Tensor,
        pending_mask: Tensor,
    ) -> Tensor:
        """Float32 logits (B, T, K) of the draft's own tokens (:attr:`vocab_ids`; K = V
        without a reduced vocabulary) for proposal nodes tokens (B, T) at positions (B, T).

        The nodes join the pending set; pending_mask (B, T, P+T) says which pending nodes
        (root first, these included) each one may see: its ancestors and itself.
        """
        layer = self.layer
        x, h = self._embed_norm(tokens)  # (B, T, hidden) each
        cos, sin = self.target.rotary(x, positions)  # (B, T, D)
        q, pk, pv = self._self_qkv(h, cos, sin, cache)  # (B, Hq, T, D), (B, Hkv, P+T, D) x2
        if self.fused is not None and shared_position(positions):
            o = self.fused.self_attention(q, cache, positions, pending_mask)  # (B, Hq, T, D)
        else:
            full = torch.full_like(cache.ring_pos[:, 0], cache.capacity)  # keep decides
            ring = Prefix(
                cache.ring_k, cache.ring_v, full, cache.ring_visible(positions), cache.capacity
            )
            o = self.attention(q, ring, pk, pv, pending_mask)  # (B, Hq, T, D)
        attn = layer.self_attn.o_proj(o.transpose(1, 2).flatten(2))  # (B, T, hidden)
        x, h = self._add_norm(layer.post_self_attention_layernorm, x, attn)
        cross = self._cross(h, cos, sin, target_cache)  # (B, T, hidden)
        x, h = self._add_norm(layer.post_cross_attention_layernorm, x, cross)
        x = x + (layer.mlp(h) if self.fused is None else self.fused.mlp(layer.mlp, h))
        if self.head is not None:
            return self.head.sub(x)
        return self.target.logits(x)  # no final norm: the layer feeds lm_head directly

    def _embed_norm(self, tokens: Tensor) -> tuple[Tensor, Tensor]:
        """(embeddings, input_layernorm(embeddings)) of tokens (B, T), each (B, T, hidden)."""
        norm = self.layer.input_layernorm
        if self.fused is None:
            return self._add_norm(norm, self.target.embed(tokens), None)
        from longspec.models.fused_kernels import embed_rms_norm

        table = self.target.body.embed_tokens.weight  # (V, hidden), on the target's device
        return embed_rms_norm(tokens, table, norm.weight, norm.eps)

    def _add_norm(self, norm, x: Tensor, delta: Tensor | None) -> tuple[Tensor, Tensor]:
        """(x + delta, norm(x + delta)); delta None: (x, norm(x))."""
        if self.fused is not None:
            from longspec.models.fused_kernels import add_rms_norm

            return add_rms_norm(x, delta, norm.weight, norm.eps)
        x = x if delta is None else x + delta
        return x, norm(x)

    def _self_qkv(
        self, h: Tensor, cos: Tensor, sin: Tensor, cache: DraftCache
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Rotated queries (B, Hq, T, D) of the new nodes, and every pending key/value
        (B, Hkv, P+T, D) once theirs joined the pending set."""
        if self.fused is not None:
            return self.fused.self_qkv(h, cos, sin, cache)
        layer, d = self.layer, self.layer.dims
        q = apply_rotary(layer.heads(layer.self_attn.q_proj(h), d.heads), cos, sin)
        k = apply_rotary(layer.heads(layer.self_attn.k_proj(h), d.kv_heads), cos, sin)
        v = layer.heads(layer.self_attn.v_proj(h), d.kv_heads)  # (B, Hkv, T, D)
        pk, pv = cache.push_pending(k, v)  # (B, Hkv, P+T, D)
        return q, pk, pv

    def _cross(self, h: Tensor, cos: Tensor, sin: Tensor, target_cache: KVCache) -> Tensor:
        """Cross-attention of h (B, T, hidden) to the target's committed last-layer KV."""
        layer, d = self.layer, self.layer.dims
        if self.fused is not None:
            q = self.fused.cross_q(layer.cross_attn.q_proj, h, cos, sin)  # (B, Hq, T, D)
        else:
            q = apply_rotary(layer.heads(layer.cross_attn.q_proj(h), d.heads), cos, sin)
        static = target_cache.capacity if self.target.static else None
        prefix = target_cache.prefix(target_cache.n_layers - 1, max_len=static)
        kv_device = prefix.k.device  # a split target's last layer may sit on another GPU
        prefix.lengths = prefix.lengths.to(kv_device)
        batch, n_q = h.shape[0], h.shape[1]
        none_k = prefix.k.new_zeros(batch, d.kv_heads, 0, d.head_dim)  # no new keys
        none_mask = torch.zeros(batch, n_q, 0, dtype=torch.bool, device=kv_device)
        o = self.attention(q.to(kv_device), prefix, none_k, none_k, none_mask)  # (B, Hq, T, D)
        return layer.cross_attn.o_proj(o.to(h.device).transpose(1, 2).flatten(2))


def shared_position(positions: Tensor) -> bool:
    """True where every node of each row sits at one position, known without reading the
    tensor: one node, or one position expanded over the nodes (a tree level)."""
    return positions.shape[1] == 1 or positions.stride(1) == 0


class FusedDraft:
    """The draft layer's projections through the target's fused kernels (CUDA graphs): one
    q|k|v projection whose rotary and pending-cache write are one kernel, the cross
    queries rotated in one kernel, one gate|up projection and one SiLU-multiply kernel;
    its self-attention over [ring | pending] as one split-KV kernel call. The layer's
    modules keep their weights as views into the fused ones."""

    def __init__(self, layer: GlideLayer):
        from longspec.models.fused_layer import concat_linears

        attn, mlp = layer.self_attn, layer.mlp
        self.qkv_weight, self.qkv_bias = concat_linears([attn.q_proj, attn.k_proj, attn.v_proj])
        q_rows = attn.q_proj.weight.shape[0]  # k|v: the rows after q's (views, no copy)
        self.kv_weight = self.qkv_weight[q_rows:]
        self.kv_bias = None if self.qkv_bias is None else self.qkv_bias[q_rows:]
        self.gate_up = concat_linears([mlp.gate_proj, mlp.up_proj])[0]
        self.heads, self.kv_heads = layer.dims.heads, layer.dims.kv_heads
        self._stand_ins: dict[int, tuple[Tensor, Tensor]] = {}  # batch -> (cache, starts)
        self._ring_lengths: dict[tuple[int, int], Tensor] = {}  # (batch, slots) -> (B,)

    def self_qkv(
        self, h: Tensor, cos: Tensor, sin: Tensor, cache: DraftCache
    ) -> tuple[Tensor, Tensor, Tensor]:
        from longspec.models.fused_kernels import rotary_into_cache

        qkv = torch.nn.functional.linear(h, self.qkv_weight, self.qkv_bias)  # (B, T, W)
        start, end = cache.take_pending(h.shape[1])
        q, _, _ = rotary_into_cache(
            qkv, cos, sin, cache.pend_k, cache.pend_v, start, self.heads, self.kv_heads
        )
        return q, cache.pend_k[:, :, :end], cache.pend_v[:, :, :end]

    def absorb(self, cache: DraftCache, h: Tensor, cos: Tensor, sin: Tensor, slots: Tensor) -> None:
        """Committed tokens' normed embeddings h (B, T, hidden) into the ring at slots
        (B, T): one k|v projection, then rotary and the scattered writes in one kernel."""
        from longspec.models.fused_kernels import rotary_into_cache

        kv = torch.nn.functional.linear(h, self.kv_weight, self.kv_bias)  # (B, T, 2 Hkv D)
        rotary_into_cache(kv, cos, sin, cache.ring_k, cache.ring_v, slots, 0, self.kv_heads)

    def self_attention(
        self, q: Tensor, cache: DraftCache, positions: Tensor, pending_mask: Tensor
    ) -> Tensor:
        """q (B, Hq, T, D) of nodes that share one position per row (``shared_position``)
        over the ring slots inside their window and the pending nodes pending_mask
        (B, T, P) lets them see -> (B, Hq, T, D), in one pass over the cache's buffer
        (pending slots lie right after the ring's; the last ``cache.n_pending`` are read).
        Rows of one position make the ring's visibility a per-row keep the kernel takes;
        on the plain path (sdpa, a per-query mask) cuDNN took ~30 us a call on the H200
        (sdpa_probe_h200.json)."""
        from longspec.attention.split_kernel import split_attention_lse
        from longspec.models.draft_kernels import ring_keep

        keep = ring_keep(cache.ring_pos, positions[:, 0], cache.window)  # (B, C)
        ring = self._ring_length(cache)  # (B,) every ring slot below the pending ones
        end = cache.capacity + cache.n_pending
        k, v = cache.keys[:, :, :end], cache.values[:, :, :end]  # (B, Hkv, C + P, D) views
        return split_attention_lse(q, k, v, ring, keep, True, pending_mask, q.dtype)[0]

    def _ring_length(self, cache: DraftCache) -> Tensor:
        """(B,) the ring's slot count, made once per cache shape (a captured round fills
        nothing here)."""
        key = (cache.ring_pos.shape[0], cache.capacity)
        if key not in self._ring_lengths:
            self._ring_lengths[key] = torch.full_like(cache.ring_pos[:, 0], cache.capacity)
        return self._ring_lengths[key]

    def cross_q(self, proj: torch.nn.Linear, h: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """Rotated cross-attention queries (B, Hq, T, D) (the kernel with no keys)."""
        from longspec.models.fused_kernels import rotary_into_cache

        q_lin = proj(h)  # (B, T, Hq * D)
        none, start = self._no_cache(h.shape[0], h)
        return rotary_into_cache(q_lin, cos, sin, none, none, start, self.heads, 0)[0]

    def _no_cache(self, batch: int, like: Tensor) -> tuple[Tensor, Tensor]:
        """A stand-in cache (never written: no key heads) and (B,) zero start slots, made
        once per batch size so that a captured round allocates and fills nothing here."""
        if batch not in self._stand_ins:
            none = like.new_empty(1, 1, 1, 1)
            self._stand_ins[batch] = none, torch.zeros(batch, dtype=torch.long, device=like.device)
        return self._stand_ins[batch]

    def mlp(self, mlp: torch.nn.Module, h: Tensor) -> Tensor:
        from longspec.models.fused_layer import gated_mlp

        return gated_mlp(self.gate_up, mlp.down_proj, h)  # (B, T, hidden)
