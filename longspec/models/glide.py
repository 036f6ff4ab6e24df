"""The GLIDE draft: one decoder layer that cross-attends to the target's last-layer cache.

Parameter names and shapes follow the published ``sail/longspec-*`` checkpoints
(REFERENCE.md section 2), so those load unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn


@dataclass(frozen=True)
class GlideDims:
    """Sizes taken from the target's config."""

    hidden: int
    heads: int
    kv_heads: int
    intermediate: int
    rms_eps: float
    vocab: int

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @classmethod
    def from_config(cls, cfg) -> GlideDims:
        return cls(
            hidden=cfg.hidden_size,
            heads=cfg.num_attention_heads,
            kv_heads=cfg.num_key_value_heads,
            intermediate=cfg.intermediate_size,
            rms_eps=cfg.rms_norm_eps,
            vocab=cfg.vocab_size,
        )


class RMSNorm(nn.Module):
    """Root-mean-square norm computed in float32, as the Llama/Qwen2 targets do."""

    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        x32 = x.float()
        x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x32.to(x.dtype)


class GlideAttentionProj(nn.Module):
    """q/k/v projections with bias, o projection without (both attentions share it)."""

    def __init__(self, d: GlideDims):
        super().__init__()
        self.q_proj = nn.Linear(d.hidden, d.heads * d.head_dim, bias=True)
        self.k_proj = nn.Linear(d.hidden, d.kv_heads * d.head_dim, bias=True)
        self.v_proj = nn.Linear(d.hidden, d.kv_heads * d.head_dim, bias=True)
        self.o_proj = nn.Linear(d.heads * d.head_dim, d.hidden, bias=False)


class GlideMLP(nn.Module):
    def __init__(self, d: GlideDims):
        super().__init__()
        self.gate_proj = nn.Linear(d.hidden, d.intermediate, bias=False)
        self.up_proj = nn.Linear(d.hidden, d.intermediate, bias=False)
        self.down_proj = nn.Linear(d.intermediate, d.hidden, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class GlideLayer(nn.Module):
    """x -> norm -> self-attn (+x) -> norm -> cross-attn (+x) -> norm -> MLP (+x).

    The attention math lives in ``longspec.models.draft`` (inference) and
    ``longspec.train`` (training); this module only owns the weights.
    """

    def __init__(self, dims: GlideDims):
        super().__init__()
        self.dims = dims
        self.input_layernorm = RMSNorm(dims.hidden, dims.rms_eps)
        self.self_attn = GlideAttentionProj(dims)
        self.post_self_attention_layernorm = RMSNorm(dims.hidden, dims.rms_eps)
        self.cross_attn = GlideAttentionProj(dims)
        self.post_cross_attention_layernorm = RMSNorm(dims.hidden, dims.rms_eps)
        self.mlp = GlideMLP(dims)
        # Token ids by decreasing training frequency, when the checkpoint ships them
        # (``draft_vocab.RANKING_FILE``); not a weight.
        self.token_ranking: Tensor | None = None

    def heads(self, x: Tensor, n_heads: int) -> Tensor:
        """(B, T, H*D) -> (B, H, T, D)."""
        return x.unflatten(-1, (n_heads, self.dims.head_dim)).transpose(1, 2)

    def self_kv(self, emb: Tensor) -> tuple[Tensor, Tensor]:
        """Self-attention k, v (B, Hkv, T, D) of token embeddings (B, T, hidden), no rotary.

        They depend on the token alone (one layer, before any attention), which is why the
        draft can absorb committed tokens without running the rest of the layer.
        """
        h = self.input_layernorm(emb)
        kv = self.dims.kv_heads
        return self.heads(self.self_attn.k_proj(h), kv), self.heads(self.self_attn.v_proj(h), kv)
