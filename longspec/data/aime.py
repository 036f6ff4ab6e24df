"""AIME 2024: problems 60-89 of ``AI-MO/aimo-validation-aime`` (the paper's QwQ benchmark).

Rows have ``id``, ``problem``, ``solution``, ``answer``, ``url``. They come from the Hub via
``datasets.load_dataset`` or, offline, from a local JSONL export with the same fields
(``data.path``). The prompt is the problem followed by an instruction to reason step by
step and put the final answer in ``\\boxed{}``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from longspec.data.jsonl import read_jsonl
from longspec.data.prompts import build_sample
from longspec.data.sample import Sample, check_num_samples, take

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

INSTRUCTION = "Reason step by step, and write the final answer inside \\boxed{}."


def aime_prompt(problem: str) -> str:
    """Task text for one problem (before ``model.prompt_format``)."""
    return f"{problem.strip()}\n\n{INSTRUCTION}"


def _row_id(row: dict[str, Any], where: str) -> int:
    value = row.get("id")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: AIME row needs an integer 'id'")
    return value


def _problem(row: dict[str, Any], where: str) -> str:
    problem = row.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise ValueError(f"{where}: AIME row needs a non-empty string 'problem'")
    return problem


class Aime24Dataset:
    """AIME24 problems (``data=aime24``).

    Settings: ``path`` (null = the Hub; else a local JSONL export), ``hf_name``,
    ``hf_split``, ``first_id`` / ``last_id`` (inclusive id range, 60-89), ``num_samples``.
    """

    def __init__(
        self,
        path: str | None = None,
        hf_name: str = "AI-MO/aimo-validation-aime",
        hf_split: str = "train",
        first_id: int = 60,
        last_id: int = 89,
        num_samples: int | None = None,
    ) -> None:
        self.path = path
        self.hf_name = hf_name
        self.hf_split = hf_split
        self.first_id = first_id
        self.last_id = last_id
        self.num_samples = check_num_samples(num_samples)

    def _rows(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """(where, row) pairs, from the local export or the Hub."""
        if self.path is not None:
            return ((f"{self.path}: line {n}", row) for n, row in read_jsonl(self.path))
        import datasets  # slow import; only the Hub path needs it

        try:
            rows = datasets.load_dataset(self.hf_name, split=self.hf_split)
        except Exception as err:  # no hub access, unknown name, ...
            raise ValueError(
                f"cannot load {self.hf_name} from the Hub ({type(err).__name__}); "
                "set data.path to a local JSONL export"
            ) from err
        return ((f"{self.hf_name} row {i}", dict(row)) for i, row in enumerate(rows))

    def problems(self) -> list[tuple[int, str]]:
        """(id, problem) pairs with ids in [first_id, last_id], sorted by id."""
        picked = []
        for where, row in self._rows():
            row_id = _row_id(row, where)
            if self.first_id <= row_id <= self.last_id:
                picked.append((row_id, _problem(row, where)))
        return sorted(picked)

    def load(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str,
        context_len: int | None = None,
    ) -> list[Sample]:
        """The selected problems as formatted, tokenized prompts."""
        return [
            build_sample(f"aime24/{row_id}", aime_prompt(problem), tokenizer, prompt_format)
            for row_id, problem in take(self.problems(), self.num_samples)
        ]
