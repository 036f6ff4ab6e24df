"""Initial weights of a GLIDE layer to train: a copy of a target decoder layer, or random.

``last_layer`` (default ``init_layer=-1``): the draft's self-attention, MLP and norms come
from that decoder layer of the target, and its cross-attention from the same attention
weights (the cross query reads keys that this very attention produced in the target's last
layer, so its q_proj starts out aligned with them). Norm mapping:
input_layernorm <- input_layernorm, post_self_attention_layernorm <- input_layernorm (it
feeds the copied q_proj), post_cross_attention_layernorm <- post_attention_layernorm.
q/k/v biases are copied when the target has them, zero otherwise.

``first_last``: the self-attention and input norm from the FIRST decoder layer (it reads
raw token embeddings, as the draft's self-attention does), the cross-attention, the other
norms and the MLP from the last one (``init_layer``).

With ``init_scale`` (see ``calibrate_output_scale``) the copied output projections are
rescaled so the draft's output has the size ``lm_head`` expects.

``random``: the transformers convention, normal(0, initializer_range) matrices, zero
biases, unit norms.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import nn

from longspec.models.glide import GlideDims, GlideLayer


def _copy_linear(dst: nn.Linear, src: nn.Linear) -> None:
    dst.weight.copy_(src.weight.float())
    if dst.bias is not None:
        if getattr(src, "bias", None) is not None:
            dst.bias.copy_(src.bias.float())
        else:
            dst.bias.zero_()


def _copy_attention(dst, src) -> None:
    for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
        _copy_linear(getattr(dst, name), getattr(src, name))


def _init_random(layer: GlideLayer, hf_model: nn.Module, init_layer: int) -> None:
    """Every linear ~ N(0, initializer_range), biases 0 (norms stay 1)."""
    std = float(getattr(hf_model.config, "initializer_range", 0.02))
    for module in layer.modules():
        if isinstance(module, nn.Linear):
            module.weight.normal_(0.0, std)
            if module.bias is not None:
                module.bias.zero_()


def _init_copy(
    layer: GlideLayer, hf_model: nn.Module, init_layer: int, first_self_attn: bool
) -> None:
    """Copies of target layer ``init_layer``: its attention for the cross-attention, its
    MLP and norms; the self-attention (and input norm) from layer 0 if first_self_attn."""
    src = hf_model.model.layers[init_layer]
    first = hf_model.model.layers[0] if first_self_attn else src
    layer.input_layernorm.weight.copy_(first.input_layernorm.weight.float())
    layer.post_self_attention_layernorm.weight.copy_(src.input_layernorm.weight.float())
    layer.post_cross_attention_layernorm.weight.copy_(src.post_attention_layernorm.weight.float())
    _copy_attention(layer.self_attn, first.self_attn)
    _copy_attention(layer.cross_attn, src.self_attn)
    for name in ("gate_proj", "up_proj", "down_proj"):
        _copy_linear(getattr(layer.mlp, name), getattr(src.mlp, name))


# train.init -> how the layer's weights are set
INITS = {
    "last_layer": partial(_init_copy, first_self_attn=False),
    "first_last": partial(_init_copy, first_self_attn=True),
    "random": _init_random,
}
INIT_MODES = tuple(INITS)


@torch.no_grad()
def init_glide(hf_model: nn.Module, mode: str, seed: int, init_layer: int = -1) -> GlideLayer:
    """A float32 GLIDE layer (CPU) for ``hf_model``'s config, initialised per ``mode``."""
    if mode not in INITS:
        raise ValueError(f"train.init must be one of {', '.join(INIT_MODES)}, got {mode!r}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layer = GlideLayer(GlideDims.from_config(hf_model.config))
        INITS[mode](layer, hf_model, init_layer)
    finally:
        torch.random.set_rng_state(gen_state)
    return layer


def output_projections(layer: GlideLayer) -> list[nn.Linear]:
    """The three projections that write into the residual stream."""
    return [layer.self_attn.o_proj, layer.cross_attn.o_proj, layer.mlp.down_proj]


@torch.no_grad()
def match_output_scale(layer: GlideLayer, draft_rms: float, target_rms: float) -> float:
    """Scale the residual-branch outputs by target_rms / draft_rms; return the factor.

    The draft feeds ``lm_head`` with no final norm, while a copied decoder layer writes
    vectors sized for the middle of a deep residual stream (SmolLM2's last layer: rms ~20
    against ~1 after the target's final norm), which makes the initial logits absurdly
    sharp. Matching the rms of the target's normalised final hidden state fixes the
    scale while keeping the copied directions. Each branch reads its input through an
    RMSNorm, so the output scales about linearly with this factor.
    """
    factor = target_rms / max(draft_rms, 1e-12)
    for proj in output_projections(layer):
        proj.weight.mul_(factor)
    return factor


@torch.no_grad()
def calibrate_output_scale(
    layer: GlideLayer, target, ids: torch.Tensor, positions: torch.Tensor, window: int
) -> float:
    """``match_output_scale`` measured on one batch ids/positions (B, T); the factor."""
    from longspec.train.forward import draft_hidden, target_pass

    out = target_pass(target, ids, positions, keep_logits=False, keep_hidden=True)
    lags = torch.ones_like(ids)
    x, _ = draft_hidden(layer, target, ids, positions, out.k, out.v, lags, window)
    branch = (x.float() - target.embed(ids).float()).pow(2).mean().sqrt()
    return match_output_scale(layer, float(branch), float(out.hidden.float().pow(2).mean().sqrt()))
