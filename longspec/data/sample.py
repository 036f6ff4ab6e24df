"""The unit every dataset produces, the loader contract, and small shared helpers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

T = TypeVar("T")


@dataclass(frozen=True)
class Sample:
    """One prompt, ready for the model.

    ``prompt_ids`` is authoritative: the runner feeds exactly these ids (special tokens
    included, as the prompt format decided). ``prompt`` is the formatted text they came
    from, for logs and result files; re-encoding it need not give back ``prompt_ids``
    exactly (pycode cuts on token ids, for instance).
    """

    id: str
    prompt: str
    prompt_ids: list[int]


class PromptDataset(Protocol):
    """What the runner calls on an instantiated ``conf/data/<name>.yaml``."""

    def load(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str,
        context_len: int | None = None,
    ) -> list[Sample]:
        """Return the samples, formatted with ``prompt_format`` and tokenized.

        ``context_len`` is the model's usable context; datasets with a paper-defined length
        filter (LongBench) use it, the others ignore it.
        """
        ...


def split_fitting(
    samples: Sequence[Sample], budget_tokens: int
) -> tuple[list[Sample], list[Sample]]:
    """Split samples into (kept, skipped): kept prompts have at most ``budget_tokens`` ids.

    The runner passes its context budget (context length minus generation budget) and
    reports the skipped count; order is preserved in both lists.
    """
    kept = [s for s in samples if len(s.prompt_ids) <= budget_tokens]
    skipped = [s for s in samples if len(s.prompt_ids) > budget_tokens]
    return kept, skipped


def check_num_samples(num_samples: int | None) -> int | None:
    """Validate a ``data.num_samples`` setting (None = all)."""
    if num_samples is not None and (isinstance(num_samples, bool) or num_samples < 0):
        raise ValueError(f"data.num_samples must be null or >= 0, got {num_samples!r}")
    return num_samples


def take(items: Sequence[T], num_samples: int | None) -> list[T]:
    """The first ``num_samples`` items (all of them when None)."""
    return list(items if num_samples is None else items[:num_samples])
