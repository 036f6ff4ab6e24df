"""Prompt formats: how a task's text becomes the model's input text and token ids.

Each format is a small function ``(tokenizer, text) -> (formatted_text, ids)`` registered in
``PROMPT_FORMATS`` under the name used by ``model.prompt_format``. The format owns special
token handling, because it differs: ``raw`` and ``vicuna`` let the tokenizer add BOS per its
own config; ``chat`` encodes the rendered template with no extra special tokens, because
the template writes them itself (as ``apply_chat_template(tokenize=True)`` does).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from longspec.data.sample import Sample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

Encoded = tuple[str, list[int]]  # (formatted text, token ids)
PromptFormat = Callable[["PreTrainedTokenizerBase", str], Encoded]

# Vicuna v1.1 conversation template. The system sentence is the one the Vicuna/LongChat
# models were tuned with; changing it changes their outputs, so it is kept verbatim.
VICUNA_SYSTEM = (
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)


def encode(tokenizer: PreTrainedTokenizerBase, text: str, add_special_tokens: bool) -> list[int]:
    """Token ids of ``text`` as a plain list."""
    return list(tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])


def format_raw(tokenizer: PreTrainedTokenizerBase, text: str) -> Encoded:
    """Text as is; the tokenizer adds BOS (or not) per its own config."""
    return text, encode(tokenizer, text, add_special_tokens=True)


def format_chat(tokenizer: PreTrainedTokenizerBase, text: str) -> Encoded:
    """One user message through the tokenizer's chat template, opened for the reply."""
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError(
            "model.prompt_format=chat needs a tokenizer with a chat template, and this one "
            "has none; set model.prompt_format to raw or vicuna"
        )
    messages = [{"role": "user", "content": text}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The template already contains the model's special tokens (BOS included, if any).
    return rendered, encode(tokenizer, rendered, add_special_tokens=False)


def format_vicuna(tokenizer: PreTrainedTokenizerBase, text: str) -> Encoded:
    """Vicuna v1.1: system sentence, then ``USER: ... ASSISTANT:``; BOS from the tokenizer."""
    rendered = f"{VICUNA_SYSTEM} USER: {text} ASSISTANT:"
    return rendered, encode(tokenizer, rendered, add_special_tokens=True)


PROMPT_FORMATS: dict[str, PromptFormat] = {
    "raw": format_raw,
    "chat": format_chat,
    "vicuna": format_vicuna,
}


def get_prompt_format(name: str) -> PromptFormat:
    """The format function registered as ``name``; ValueError listing the names otherwise."""
    try:
        return PROMPT_FORMATS[name]
    except (KeyError, TypeError):
        allowed = ", ".join(sorted(PROMPT_FORMATS))
        raise ValueError(f"unknown model.prompt_format {name!r}; allowed: {allowed}") from None


def build_sample(
    sample_id: str, text: str, tokenizer: PreTrainedTokenizerBase, prompt_format: str
) -> Sample:
    """Format ``text`` with ``prompt_format``, tokenize it, and wrap it as a Sample."""
    prompt, ids = get_prompt_format(prompt_format)(tokenizer, text)
    return Sample(id=sample_id, prompt=prompt, prompt_ids=ids)


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The special ids the tokenizer puts before a text (e.g. ``[bos]``, or ``[]``).

    Found by encoding a probe with and without special tokens; anything the tokenizer
    appends (an EOS) is ignored, since a continuation prompt must not end the document.
    """
    probe = "x"
    bare = encode(tokenizer, probe, add_special_tokens=False)
    full = encode(tokenizer, probe, add_special_tokens=True)
    for start in range(len(full) - len(bare) + 1):
        if full[start : start + len(bare)] == bare:
            return full[:start]
    return []
