"""Decoder layers through fused kernels (CUDA, Llama/Qwen2 with SiLU MLPs).

Per layer: one q|k|v projection, one kernel for rotary + cache write, the attention
backend, one o projection, one kernel for residual add + RMSNorm, one gate|up projection,
one SiLU-multiply kernel, one down projection; the next layer's first norm absorbs the
MLP's residual add. The plain path (``TargetModel._layer``) stays the reference.

The fused projection weights are single tensors, and the transformers modules' own
weights become views into them, so no weight memory is duplicated.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn

from longspec.attention.base import AttentionBackend
from longspec.cache import KVCache


def can_fuse(hf_model: nn.Module) -> bool:
    """A CUDA model of the Llama/Qwen2 layout with a SiLU MLP, and Triton installed."""
    cfg = hf_model.config
    layer = hf_model.model.layers[0]
    return (
        importlib.util.find_spec("triton") is not None
        and next(hf_model.parameters()).is_cuda
        and getattr(cfg, "hidden_act", None) == "silu"
        and all(hasattr(layer.mlp, n) for n in ("gate_proj", "up_proj", "down_proj"))
        and all(hasattr(layer.self_attn, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj"))
    )


def concat_linears(linears: list[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """One (sum of out, in) weight (and bias); each module's weight becomes a view of it."""
    weight = torch.cat([m.weight.data for m in linears])
    has_bias = [m.bias is not None for m in linears]
    bias = torch.cat([m.bias.data for m in linears]) if all(has_bias) else None
    if any(has_bias) and bias is None:
        raise ValueError("fused projections need all or none of the biases")
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight = nn.Parameter(weight[row : row + n], requires_grad=False)
        if bias is not None:
            m.bias = nn.Parameter(bias[row : row + n], requires_grad=False)
        row += n
    return weight, bias


class FusedLayers:
    """The target's decoder stack through fused kernels (see module docstring)."""

    def __init__(self, body: nn.Module, attention: AttentionBackend, n_heads: int, n_kv_heads: int):
        self.body = body
        self.attention = attention
        self.n_heads, self.n_kv_heads = n_heads, n_kv_heads
        self.qkv = [
            concat_linears([a.q_proj, a.k_proj, a.v_proj])
            for a in (layer.self_attn for layer in body.layers)
        ]
        self.gate_up = [
            concat_linears([layer.mlp.gate_proj, layer.mlp.up_proj])[0] for layer in body.layers
        ]

    def forward(
        self,
        x: Tensor,
        cos: Tensor,
        sin: Tensor,
        cache: KVCache,
        prefix_args: tuple,
        start: Tensor,
        new_mask: Tensor | None,
    ) -> Tensor:
        """Embeddings x (B, T, hidden) -> final-norm hidden states (B, T, hidden)."""
        from longspec.models.fused_kernels import add_rms_norm

        delta = None
        for idx, layer in enumerate(self.body.layers):
            norm = layer.input_layernorm
            x, h = add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)
            prefix = cache.prefix(idx, *prefix_args)
            attn_out = self._attention(idx, layer, h, cos, sin, cache, prefix, start, new_mask)
            norm = layer.post_attention_layernorm
            x, h = add_rms_norm(x, attn_out, norm.weight, norm.variance_epsilon)
            delta = self._mlp(idx, layer, h)
        norm = self.body.norm
        return add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)[1]

    def _attention(self, idx, layer, h, cos, sin, cache, prefix, start, new_mask) -> Tensor:
        from longspec.models.fused_kernels import rotary_into_cache

        weight, bias = self.qkv[idx]
        qkv = torch.nn.functional.linear(h, weight, bias)  # (B, T, (Hq + 2 Hkv) * D)
        k_cache, v_cache = cache.layer(idx)
        q, k, v = rotary_into_cache(
            qkv, cos, sin, k_cache, v_cache, start, self.n_heads, self.n_kv_heads
        )
        prefix.in_flight_cached = True
        o = self.attention(q, prefix, k, v, new_mask)  # (B, Hq, T, D)
        return layer.self_attn.o_proj(o.transpose(1, 2).flatten(2))  # (B, T, hidden)

    def _mlp(self, idx: int, layer: nn.Module, h: Tensor) -> Tensor:
        from longspec.models.fused_kernels import silu_mul

        gate_up = torch.nn.functional.linear(h, self.gate_up[idx])  # (B, T, 2I)
        return layer.mlp.down_proj(silu_mul(gate_up))  # (B, T, hidden)
