"""Random-weight targets of real model shapes, built straight on the device (no download).

The model is constructed on the ``meta`` device (no memory, no CPU init), moved to the
target device uninitialised with ``to_empty`` and filled in place: small normal weights,
unit norms, zero biases. ``to_empty`` also leaves the rotary embedding's non-persistent
``inv_freq`` buffers uninitialised, so they are recomputed from the config.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

SHAPES: dict[str, dict[str, Any]] = {
    # Llama-3-8B.
    "llama8b": {
        "model_type": "llama",
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 128256,
        "rope_theta": 500000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 262144,
    },
    # Qwen2.5-14B: about 29.5 GB of float16 weights.
    "qwen14b": {
        "model_type": "qwen2",
        "hidden_size": 5120,
        "num_hidden_layers": 48,
        "num_attention_heads": 40,
        "num_key_value_heads": 8,
        "intermediate_size": 13824,
        "vocab_size": 152064,
        "rope_theta": 1000000.0,
        "rms_norm_eps": 1e-6,
        "max_position_embeddings": 131072,
    },
    # SmolLM2-135M (tied embeddings): the embedded model, for phase profiles on a GPU.
    "smollm2": {
        "model_type": "llama",
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "vocab_size": 49152,
        "rope_theta": 100000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
        "tie_word_embeddings": True,
    },
    # For CPU tests.
    "tiny": {
        "model_type": "llama",
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "vocab_size": 512,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "max_position_embeddings": 8192,
    },
}


def shape_config(shape: str) -> PretrainedConfig:
    """The transformers config of a named shape (see :data:`SHAPES`)."""
    if shape not in SHAPES:
        raise ValueError(f"shape: unknown model shape {shape!r}; options: {sorted(SHAPES)}")
    spec = {"tie_word_embeddings": False, **SHAPES[shape]}
    return AutoConfig.for_model(spec.pop("model_type"), **spec)


def random_model(
    config: PretrainedConfig, dtype: torch.dtype, device: torch.device | str, seed: int = 0
) -> PreTrainedModel:
    """A causal LM of ``config`` with random weights, materialised on ``device`` in ``dtype``."""
    device = torch.device(device)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives a tied head its own storage: share it again
    generator = torch.Generator(device).manual_seed(seed)
    _fill(model, config.initializer_range, generator)
    _reset_rotary(model, device)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def _fill(model: nn.Module, std: float, generator: torch.Generator) -> None:
    """Normal(0, std) matrices and embeddings, unit norm weights, zero biases (in place)."""
    for name, param in model.named_parameters():
        if name.endswith("bias"):
            param.zero_()
        elif param.dim() == 1:  # RMSNorm weights
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=generator)


def _reset_rotary(model: nn.Module, device: torch.device) -> None:
    """Recompute every rotary embedding's buffers (float32, from the config) on the device."""
    for module in model.modules():
        if not type(module).__name__.endswith("RotaryEmbedding"):
            continue
        fresh = type(module)(module.config)  # built on the CPU: real values
        for name, buf in fresh.named_buffers(recurse=False):
            module.register_buffer(name, buf.to(device), persistent=False)


def weight_bytes(model: PreTrainedModel) -> tuple[int, int]:
    """(all parameter bytes, bytes one decode step reads).

    A step reads every weight once except the input embedding, of which it gathers only
    the rows of its tokens (unless the embedding is tied to the output head).
    """
    total = sum(p.nbytes for p in model.parameters())
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    return total, total if emb is head else total - emb.nbytes
