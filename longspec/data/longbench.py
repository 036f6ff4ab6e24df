"""LongBench tasks used in the paper, read from local ``{data.dir}/{task}.jsonl`` files.

The files are in LongBench's own record format (``input``, ``context``, ``answers``,
``length``, ``dataset``, ``language``, ``all_classes``, ``_id``); write them with
``python -m longspec.data.convert_longbench --task <task> --out <dir>``.

Each task has a prompt template in the spirit of LongBench's (wording ours). The paper's
length filter keeps a prompt when ``min_prompt_tokens < tokens <= context_len -
reserve_tokens``, counted on the final ids (after ``model.prompt_format``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longspec.data.jsonl import read_jsonl
from longspec.data.prompts import build_sample
from longspec.data.sample import Sample, check_num_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

TEMPLATES: dict[str, str] = {
    "gov_report": (
        "You are given a report by a government agency. Write a one-page summary of the "
        "report.\n\nReport:\n{context}\n\nNow, write a one-page summary of the report."
        "\n\nSummary:"
    ),
    "qmsum": (
        "You are given the transcript of a meeting and a query, which is a question or an "
        "instruction about it. Respond to the query in one or more sentences.\n\n"
        "Transcript:\n{context}\n\nNow respond to the query about the transcript above, in "
        "one or more sentences.\n\nQuery: {input}\nAnswer:"
    ),
    "multi_news": (
        "You are given several news articles. Write a one-page summary that covers all of "
        "them.\n\nNews:\n{context}\n\nNow, write a one-page summary of all the news articles."
        "\n\nSummary:"
    ),
    "lcc": "Complete the following code.\n{context}Next line of code:\n",
    "repobench-p": "Complete the following code.\n{context}{input}Next line of code:\n",
}
TASKS = tuple(TEMPLATES)


def check_task(task: str) -> str:
    """``task`` if it is a supported LongBench task; ValueError listing them otherwise."""
    if task not in TEMPLATES:
        raise ValueError(f"unknown LongBench task {task!r}; allowed: {', '.join(TASKS)}")
    return task


def fill_template(task: str, record: dict[str, Any], where: str = "record") -> str:
    """The task prompt for one LongBench record (before ``model.prompt_format``)."""
    fields = {}
    for name in ("context", "input"):
        value = record.get(name, "")
        if not isinstance(value, str):
            raise ValueError(f"{where}: LongBench field {name!r} must be a string")
        fields[name] = value
    if not fields["context"]:
        raise ValueError(f"{where}: LongBench record has no 'context'")
    # str.format only parses the template; braces inside the code/context stay as they are.
    return TEMPLATES[check_task(task)].format(**fields)


class LongBenchDataset:
    """One LongBench task (``data=longbench``).

    Settings: ``task`` (gov_report|qmsum|multi_news|lcc|repobench-p), ``dir`` (folder with
    ``{task}.jsonl``), ``min_prompt_tokens`` (1200), ``reserve_tokens`` (2000, room kept for
    generation), ``num_samples`` (null = all; counted after the length filter).
    """

    def __init__(
        self,
        task: str,
        dir: str,  # named like the config field data.dir
        min_prompt_tokens: int = 1200,
        reserve_tokens: int = 2000,
        num_samples: int | None = None,
    ) -> None:
        self.task = check_task(task)
        self.dir = Path(dir).expanduser()
        self.min_prompt_tokens = min_prompt_tokens
        self.reserve_tokens = reserve_tokens
        self.num_samples = check_num_samples(num_samples)

    @property
    def path(self) -> Path:
        return self.dir / f"{self.task}.jsonl"

    def max_prompt_tokens(self, context_len: int | None) -> int | None:
        """Upper bound of the length filter (None: no bound, when context_len is unknown)."""
        if context_len is None:
            return None
        upper = context_len - self.reserve_tokens
        if upper <= self.min_prompt_tokens:
            raise ValueError(
                f"context_len={context_len} - data.reserve_tokens={self.reserve_tokens} leaves "
                f"no room above data.min_prompt_tokens={self.min_prompt_tokens}"
            )
        return upper

    def load(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str,
        context_len: int | None = None,
    ) -> list[Sample]:
        """Formatted, tokenized prompts that pass the length filter, in file order."""
        upper = self.max_prompt_tokens(context_len)
        if not self.path.is_file():
            raise ValueError(
                f"LongBench file {self.path} not found; write it with: python -m "
                f"longspec.data.convert_longbench --task {self.task} --out {self.dir}"
            )
        kept: list[Sample] = []
        seen = 0
        for lineno, record in read_jsonl(self.path):
            if self.num_samples is not None and len(kept) >= self.num_samples:
                break
            seen += 1
            text = fill_template(self.task, record, f"{self.path}: line {lineno}")
            sample_id = f"{self.task}/{record.get('_id', lineno)}"
            sample = build_sample(sample_id, text, tokenizer, prompt_format)
            n = len(sample.prompt_ids)
            if n > self.min_prompt_tokens and (upper is None or n <= upper):
                kept.append(sample)
        log.info(
            "LongBench %s: kept %d of %d prompts (%d < tokens <= %s)",
            self.task,
            len(kept),
            seen,
            self.min_prompt_tokens,
            upper,
        )
        return kept
