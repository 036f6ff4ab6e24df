"""Local JSONL prompts, and the JSONL reader the other local datasets share.

File format: one JSON object per line, ``{"prompt": "...", "id": "..."}``; ``prompt`` is used
verbatim (then formatted with ``model.prompt_format``), ``id`` is optional and defaults to
the 1-based line number. Blank lines are skipped. Every problem is a one-line ValueError
that names the file and the line.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longspec.data.prompts import build_sample
from longspec.data.sample import Sample, check_num_samples, take

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

UTF8_BOM = b"\xef\xbb\xbf"


def read_bytes(path: Path) -> bytes:
    """The file's bytes; ValueError naming the path if it is missing or unreadable."""
    try:
        return path.read_bytes()
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(f"cannot read JSONL file {path}: {reason}") from None


def _decode_line(raw: bytes, where: str) -> dict[str, Any]:
    """One non-blank line -> its JSON object."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{where} is not valid UTF-8") from None
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err.msg} at column {err.colno}") from None
    except (ValueError, RecursionError) as err:  # e.g. huge ints, absurd nesting
        raise ValueError(f"{where} is not valid JSON: {type(err).__name__}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where} is not a JSON object")
    return obj


def iter_jsonl(data: bytes, source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (1-based line number, object) for each non-blank line of ``data``.

    Splits on ``\\n`` only: JSON strings cannot hold a raw newline, but may hold characters
    that ``str.splitlines`` would treat as line breaks.
    """
    data = data.removeprefix(UTF8_BOM)
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        if raw.strip():
            yield lineno, _decode_line(raw, f"{source}: line {lineno}")


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``iter_jsonl`` over a file."""
    path = Path(path).expanduser()
    return iter_jsonl(read_bytes(path), str(path))


def _record_id(obj: dict[str, Any], lineno: int, where: str) -> str:
    """The record's ``id`` as a string (the line number when absent)."""
    value = obj.get("id", lineno)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise ValueError(f"{where}: 'id' must be a string or an integer")
    return str(value)


def parse_prompt_records(data: bytes, source: str) -> list[tuple[str, str]]:
    """(id, prompt) pairs of a prompts JSONL document; ValueError on any bad line."""
    records: list[tuple[str, str]] = []
    seen: set[str] = set()
    for lineno, obj in iter_jsonl(data, source):
        where = f"{source}: line {lineno}"
        prompt = obj.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise ValueError(f"{where} has no non-empty string 'prompt'")
        sample_id = _record_id(obj, lineno, where)
        if sample_id in seen:
            raise ValueError(f"{where}: duplicate id {sample_id!r}")
        seen.add(sample_id)
        records.append((sample_id, prompt))
    return records


class JsonlDataset:
    """Prompts from a local JSONL file (``data=jsonl``; settings ``path``, ``num_samples``)."""

    def __init__(self, path: str, num_samples: int | None = None) -> None:
        self.path = Path(path).expanduser()
        self.num_samples = check_num_samples(num_samples)

    def load(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str,
        context_len: int | None = None,
    ) -> list[Sample]:
        """All (or the first ``num_samples``) prompts, formatted and tokenized.

        The whole file is validated even when only a few samples are taken.
        """
        records = parse_prompt_records(read_bytes(self.path), str(self.path))
        return [
            build_sample(sample_id, prompt, tokenizer, prompt_format)
            for sample_id, prompt in take(records, self.num_samples)
        ]
