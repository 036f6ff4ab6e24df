"""Decoder layers through fused kernels (CUDA, Llama/Qwen2 with SiLU MLPs).

Per layer: one q|k|v projection, one kernel for rotary + cache write, the attention
backend, one o projection, one kernel for residual add + RMSNorm, one gate|up projection,
one SiLU-multiply kernel, one down projection; the next layer's first norm absorbs the
MLP's residual add. For one token of one row (a batch-1 decode step, ``gemv``) every
projection is one matrix-vector kernel that also does the step before or after it: the
q|k|v and gate|up projections normalise their input, the o and down projections add the
residual, the down projection forms silu(gate) * up (``longspec.models.gemv``); a layer is
then six kernels and the attention's split merge. With ``rows`` (off: slower on the H200,
see ``longspec.models.gemm_rows``) up to ``gemm_rows.MAX_ROWS`` rows take the same folded
layer through ``gemm_rows``. The plain path
(``TargetModel._layer``) stays the reference.

The fused projection weights are single tensors, and the transformers modules' own
weights become views into them, so no weight memory is duplicated.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

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

    def __init__(
        self,
        body: nn.Module,
        attention: AttentionBackend,
        n_heads: int,
        n_kv_heads: int,
        gemv: bool = True,
        rows: bool = False,
    ):
        self.body = body
        self.gemv = gemv  # one-row steps through longspec.models.gemv
        # Up to gemm_rows.MAX_ROWS rows through longspec.models.gemm_rows. Off: on the H200
        # it lost to cuBLAS + the kernels it folds in (see that module's docstring).
        self.rows = rows
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
        from longspec.models.gemm_rows import few_rows, gemm_rows
        from longspec.models.gemv import gemv, one_row

        attend = (cos, sin, cache, prefix_args, start, new_mask)
        if self.gemv and one_row(x):
            return self._folded(x, attend, gemv)
        if self.rows and few_rows(x):
            return self._folded(x, attend, gemm_rows)
        delta = None  # what the next norm still has to add to the residual stream x
        for idx, layer in enumerate(self.body.layers):
            norm = layer.input_layernorm
            x, h = add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)
            weight, bias = self.qkv[idx]
            qkv = torch.nn.functional.linear(h, weight, bias)  # (B, T, (Hq + 2 Hkv) * D)
            attn_out = layer.self_attn.o_proj(self._attention(idx, qkv, *attend))
            norm = layer.post_attention_layernorm
            x, h = add_rms_norm(x, attn_out, norm.weight, norm.variance_epsilon)
            delta = self._mlp(idx, layer, h)
        norm = self.body.norm
        return add_rms_norm(x, delta, norm.weight, norm.variance_epsilon)[1]

    def _folded(self, x: Tensor, attend: tuple, project: Callable[..., Tensor]) -> Tensor:
        """The same stack with the norms, the activation and the residual adds folded into
        the projections: ``project`` is ``gemv`` (one token of one row) or ``gemm_rows``
        (a few rows), one kernel per projection."""
        from longspec.models.fused_kernels import add_rms_norm
        from longspec.models.gemv import RowNorm

        for idx, layer in enumerate(self.body.layers):
            norm, attn = layer.input_layernorm, layer.self_attn
            weight, bias = self.qkv[idx]
            qkv = project(x, weight, bias, norm=RowNorm(norm.weight, norm.variance_epsilon))
            o = self._attention(idx, qkv, *attend)  # (B, T, Hq * D)
            x = project(o, attn.o_proj.weight, attn.o_proj.bias, residual=x)  # (B, T, hidden)
            norm, mlp = layer.post_attention_layernorm, layer.mlp
            post = RowNorm(norm.weight, norm.variance_epsilon)
            gate_up = project(x, self.gate_up[idx], norm=post)  # (B, T, 2I)
            x = project(gate_up, mlp.down_proj.weight, mlp.down_proj.bias, x, silu_gate=True)
        norm = self.body.norm
        return add_rms_norm(x, None, norm.weight, norm.variance_epsilon)[1]

    def _attention(self, idx, qkv, cos, sin, cache, prefix_args, start, new_mask) -> Tensor:
        """Fused q|k|v rows (B, T, (Hq + 2 Hkv) * D) -> attention output (B, T, Hq * D);
        k and v go into the cache at slots start[b] + t."""
        from longspec.models.fused_kernels import rotary_into_cache

        k_cache, v_cache = cache.layer(idx)
        q, k, v = rotary_into_cache(
            qkv, cos, sin, k_cache, v_cache, start, self.n_heads, self.n_kv_heads
        )
        prefix = cache.prefix(idx, *prefix_args)
        prefix.in_flight_cached = True
        o = self.attention(q, prefix, k, v, new_mask)  # (B, Hq, T, D)
        return o.transpose(1, 2).flatten(2)  # (B, T, Hq * D)

    def _mlp(self, idx: int, layer: nn.Module, h: Tensor) -> Tensor:
        return gated_mlp(self.gate_up[idx], layer.mlp.down_proj, h)


def gated_mlp(gate_up: Tensor, down_proj: nn.Linear, h: Tensor) -> Tensor:
    """SiLU MLP of h (B, T, hidden) with a fused [gate | up] weight (2I, hidden): one
    projection, one SiLU-multiply kernel, the down projection -> (B, T, hidden)."""
    from longspec.models.fused_kernels import silu_mul

    gate_up_rows = torch.nn.functional.linear(h, gate_up)  # (B, T, 2I)
    return down_proj(silu_mul(gate_up_rows))  # (B, T, hidden)
