"""The GLIDE training forward: the inference function of ``GlideDraft``, all positions at once.

For a training sequence of T tokens, draft token i (at position ``positions[i]``) gets
* self-attention over the draft keys of tokens j <= i with position in (p_i - window, p_i],
  the union of the inference ring and pending set;
* cross-attention with its query rotated at p_i over the target's last-layer keys/values
  (rotary already applied, computed with the same positions) of tokens 0..i - lag[i];
* the target's ``lm_head`` on the residual stream (no final norm).

``tests/test_train.py`` checks that these logits equal the real decode path's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from longspec.attention.base import repeat_kv
from longspec.models.glide import GlideLayer
from longspec.models.rotary import apply_rotary
from longspec.models.target import TargetModel
from longspec.train.positions import cross_mask, self_mask


@dataclass
class TargetOut:
    """What the frozen target gives a training batch (all plain tensors, no autograd)."""

    k: Tensor  # (B, Hkv, T, D) last-layer keys, rotary applied
    v: Tensor  # (B, Hkv, T, D) last-layer values
    argmax: Tensor  # (B, T) the target's greedy next token at each position
    logits: Tensor | None  # (B, T, V) float32 target logits (kept only for distillation)
    hidden: Tensor | None = None  # (B, T, hidden) final normalised hidden (on request)


def target_pass(
    target: TargetModel,
    ids: Tensor,
    positions: Tensor,
    keep_logits: bool,
    keep_hidden: bool = False,
) -> TargetOut:
    """Run the frozen target over ids (B, T) at positions (B, T) through its own forward."""
    batch, n = ids.shape
    cache = target.new_cache(batch, n)  # allocated outside inference mode: plain tensors
    start = torch.zeros(batch, dtype=torch.long, device=ids.device)
    with torch.inference_mode():
        hidden = target.forward(ids, positions, cache, start, None)  # (B, T, hidden)
        logits = target.logits(hidden)  # (B, T, V) float32
        argmax = logits.argmax(-1)
    k, v = cache.k[-1].clone(), cache.v[-1].clone()
    del cache
    # Inference tensors cannot be saved for backward: clone out of inference mode.
    return TargetOut(
        k,
        v,
        argmax.clone(),
        logits.clone() if keep_logits else None,
        hidden.clone() if keep_hidden else None,
    )


def _attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor) -> Tensor:
    """q (B, Hq, T, D) over k/v (B, Hkv, S, D) under mask (B, T, S) -> (B, T, Hq*D)."""
    n_rep = q.shape[1] // k.shape[1]
    k, v = repeat_kv(k, n_rep), repeat_kv(v, n_rep)
    if k.dtype != q.dtype:  # e.g. float16 target KV under a bfloat16 autocast
        k, v = k.to(q.dtype), v.to(q.dtype)
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None])
    return o.transpose(1, 2).flatten(2)


def draft_hidden(
    layer: GlideLayer,
    target: TargetModel,
    ids: Tensor,
    positions: Tensor,
    target_k: Tensor,
    target_v: Tensor,
    lags: Tensor,
    window: int,
) -> tuple[Tensor, Tensor]:
    """Draft output (B, T, hidden) before lm_head, and valid (B, T) (queries with target KV)."""
    d = layer.dims
    with torch.no_grad():
        x = target.embed(ids)  # (B, T, hidden), shared and frozen
        cos, sin = target.rotary(x, positions)  # (B, T, D)
    h = layer.input_layernorm(x)
    q = apply_rotary(layer.heads(layer.self_attn.q_proj(h), d.heads), cos, sin)
    k = apply_rotary(layer.heads(layer.self_attn.k_proj(h), d.kv_heads), cos, sin)
    v = layer.heads(layer.self_attn.v_proj(h), d.kv_heads)
    o = _attend(q, k, v, self_mask(positions, window))
    x = x + layer.self_attn.o_proj(o)
    h = layer.post_self_attention_layernorm(x)
    q = apply_rotary(layer.heads(layer.cross_attn.q_proj(h), d.heads), cos, sin)
    mask, valid = cross_mask(lags)
    o = _attend(q, target_k, target_v, mask)
    x = x + layer.cross_attn.o_proj(o)
    x = x + layer.mlp(layer.post_cross_attention_layernorm(x))
    return x, valid


def draft_logits(
    layer: GlideLayer,
    target: TargetModel,
    ids: Tensor,
    positions: Tensor,
    out: TargetOut,
    lags: Tensor,
    window: int,
) -> tuple[Tensor, Tensor]:
    """Draft logits (B, T, V) through the target's lm_head, and valid (B, T)."""
    x, valid = draft_hidden(layer, target, ids, positions, out.k, out.v, lags, window)
    return target.lm_head(x), valid


@dataclass
class LossOut:
    loss: Tensor  # scalar, what is minimised
    ce: Tensor  # scalar, cross-entropy on the true next tokens
    kl: Tensor  # scalar, KL(target || draft) (0 when not computed)
    acc: Tensor  # scalar, top-1 accuracy on the true next tokens
    agree: Tensor  # scalar, top-1 agreement with the target's argmax
    n: Tensor  # number of tokens counted


def draft_loss(
    logits: Tensor,
    ids: Tensor,
    valid: Tensor,
    out: TargetOut,
    distill_weight: float,
    temperature: float = 1.0,
) -> LossOut:
    """(1 - w) * CE(true next token) + w * T^2 * KL(target_T || draft_T) over valid tokens.

    logits (B, T, V) predict ids[:, 1:]; the last position has no label.
    """
    logits = logits[:, :-1].float()  # (B, T-1, V)
    labels = ids[:, 1:]
    mask = valid[:, :-1].float()  # (B, T-1)
    n = mask.sum().clamp(min=1)
    logp = torch.log_softmax(logits, -1)
    ce = -(logp.gather(-1, labels[..., None])[..., 0] * mask).sum() / n
    kl = logits.new_zeros(())
    if distill_weight > 0:
        assert out.logits is not None, "distillation needs the target logits"
        t_logp = torch.log_softmax(out.logits[:, :-1].float() / temperature, -1)
        d_logp = logp if temperature == 1.0 else torch.log_softmax(logits / temperature, -1)
        per_tok = (t_logp.exp() * (t_logp - d_logp)).sum(-1)  # (B, T-1)
        kl = (per_tok * mask).sum() / n * temperature**2
    loss = (1.0 - distill_weight) * ce + distill_weight * kl if distill_weight > 0 else ce
    with torch.no_grad():
        top = logits.argmax(-1)
        acc = ((top == labels).float() * mask).sum() / n
        agree = ((top == out.argmax[:, :-1]).float() * mask).sum() / n
    return LossOut(loss, ce.detach(), kl.detach(), acc, agree, n)
