"""Tiny random Llama / Qwen2 causal LMs with a byte-level tokenizer, for fast tests.

Any text tokenizes (every byte is a token), the weights are random but fixed by a seed,
and the init scale is large enough that greedy decoding does not collapse to one token.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedTokenizerFast

SPECIALS = ("<s>", "</s>", "<pad>")

CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)

DEFAULTS: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 4096,
    "rope_theta": 10000.0,
    "initializer_range": 0.2,
}


def byte_tokenizer() -> PreTrainedTokenizerFast:
    """BPE with no merges over the 256 byte symbols (ids 3..258) plus <s>, </s>, <pad>."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # 256 printable stand-ins
    vocab = {tok: i for i, tok in enumerate([*SPECIALS, *alphabet])}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    bos = SPECIALS[0]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[(bos, vocab[bos])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=SPECIALS[0],
        eos_token=SPECIALS[1],
        pad_token=SPECIALS[2],
        chat_template=CHAT_TEMPLATE,
    )


def build_tiny(spec: dict[str, Any], out_dir: Path, seed: int) -> Path:
    """Save a random ``spec["model_type"]`` model (llama / qwen2) and its tokenizer to out_dir.

    Other keys of ``spec`` override :data:`DEFAULTS` and go to ``AutoConfig.for_model``;
    ``vocab_size`` defaults to the tokenizer size (a larger one pads the embedding, as Qwen does).
    """
    kwargs = {**DEFAULTS, **spec}
    model_type = kwargs.pop("model_type")
    tokenizer = byte_tokenizer()
    kwargs.setdefault("vocab_size", len(tokenizer))
    if kwargs["vocab_size"] < len(tokenizer):
        raise ValueError(f"vocab_size {kwargs['vocab_size']} < tokenizer size {len(tokenizer)}")
    config = AutoConfig.for_model(
        model_type,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **kwargs,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    out_dir = Path(out_dir)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
