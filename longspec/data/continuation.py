"""Continuation prompts: exactly N token ids cut from a stream of local documents.

Shared by ``pycode`` and ``localtext``. Sample ``i`` starts at document ``i`` of the
(already ordered) list and continues with the following documents, wrapping around once,
until it is long enough. Its ids are the tokenizer's special prefix (e.g. ``[bos]``)
followed by the first ``prompt_tokens - len(prefix)`` ids of that text; ``prompt`` is the
decoded cut. There is no instruction: the model simply continues the text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from longspec.data.prompts import encode, special_prefix
from longspec.data.sample import Sample

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

CHARS_PER_TOKEN_GUESS = 4  # first text window tried, in characters per wanted token
TOKEN_MARGIN = 32  # extra ids tokenized past the cut so the text window edge cannot matter


def rotated(read: Callable[[int], str], count: int, start: int) -> Iterator[str]:
    """``read(start)``, ``read(start + 1)``, ... over all ``count`` documents, wrapping once."""
    for k in range(count):
        yield read((start + k) % count)


def leading_ids(
    tokenizer: PreTrainedTokenizerBase, pieces: Iterator[str], n: int, corpus: str
) -> list[int]:
    """The first ``n`` ids of the concatenated pieces (no special tokens).

    Tokenizes a growing text window instead of whole documents (some reach 100k+
    characters); the window holds ``TOKEN_MARGIN`` ids past the cut, so the cut ids are
    those of the full text barring a pathological token spanning the whole margin.
    """
    text, window, exhausted = "", n * CHARS_PER_TOKEN_GUESS, False
    while True:
        while len(text) < window and not exhausted:
            piece = next(pieces, None)
            exhausted = piece is None
            text += piece or ""
        ids = encode(tokenizer, text[:window], add_special_tokens=False)
        if len(ids) >= n + TOKEN_MARGIN or (exhausted and window >= len(text)):
            break
        window *= 2
    if len(ids) < n:
        raise ValueError(f"data.prompt_tokens={n} is longer than the whole {corpus} corpus")
    return ids[:n]


def continuation_samples(
    tokenizer: PreTrainedTokenizerBase,
    names: Sequence[str],
    read: Callable[[int], str],
    *,
    prompt_tokens: int,
    count: int,
    id_prefix: str,
    corpus: str,
) -> list[Sample]:
    """``count`` prompts of exactly ``prompt_tokens`` ids; sample i starts at document i.

    ``names[k]`` labels document k in the sample id (``<id_prefix>/<i:04d>/<name>``) and
    ``read(k)`` returns its text (with any header), read lazily.
    """
    prefix = special_prefix(tokenizer)  # e.g. [bos]
    body_len = prompt_tokens - len(prefix)
    if body_len < 1:
        raise ValueError(f"data.prompt_tokens={prompt_tokens} leaves no room for {corpus} text")
    samples = []
    for i in range(count):
        body = leading_ids(tokenizer, rotated(read, len(names), i), body_len, corpus)
        samples.append(
            Sample(
                id=f"{id_prefix}/{i:04d}/{names[i]}",
                prompt=tokenizer.decode(body),
                prompt_ids=prefix + body,
            )
        )
    return samples
