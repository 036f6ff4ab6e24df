"""localtext: continuation prompts from local text of one kind (prose, C, shell, other languages).

Measures acceptance on text the draft was never trained on (it is trained on pycode's
train split only). Files come from ``longspec.data.local_files`` (``data.kind``; the default
places, or ``data.roots``). A file counts when its text has at least ``data.min_chars``
characters; files with the same text are kept once (the first path in sorted order). With
fewer than ``data.min_files`` files the kind stops with a one-line error.

Determinism: the files are sorted by path, then shuffled with ``random.Random(data.seed)``;
sample ``i`` starts at file ``i`` and continues with the following ones until it has exactly
``data.prompt_tokens`` ids (``longspec.data.continuation``, as pycode). ``files()`` lists
the paths in that order and, after ``load``, ``files_read`` the ones the prompts were cut
from, so a run can record what it used. Like pycode, a continuation
task: always ``raw`` prompts.
"""

from __future__ import annotations

import hashlib
import logging
import random
from pathlib import Path
from typing import TYPE_CHECKING

from longspec.data.continuation import continuation_samples
from longspec.data.local_files import check_kind, kind_files
from longspec.data.sample import Sample, check_num_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)


def _with_newline(text: str) -> str:
    return text if text.endswith("\n") else text + "\n"


class LocalTextDataset:
    """Continuation prompts from local files of one kind (``data=localtext``).

    Settings: ``kind`` (prose|c|shell|other_language), ``prompt_tokens`` (exact prompt
    length in ids, BOS included), ``num_samples`` (null = one per file), ``seed`` (file
    order), ``roots`` (null = the kind's default places; else a list of directories),
    ``min_chars`` (shortest file kept), ``min_files`` (fewest files to sample from).
    """

    def __init__(
        self,
        kind: str,
        prompt_tokens: int = 2048,
        num_samples: int | None = 2,
        seed: int = 0,
        roots: list[str] | None = None,
        min_chars: int = 1000,
        min_files: int = 8,
    ) -> None:
        self.spec = check_kind(kind)
        if prompt_tokens < 1:
            raise ValueError(f"data.prompt_tokens must be >= 1, got {prompt_tokens}")
        if min_files < 1:
            raise ValueError(f"data.min_files must be >= 1, got {min_files}")
        self.kind = kind
        self.prompt_tokens = prompt_tokens
        self.num_samples = check_num_samples(num_samples)
        self.seed = seed
        self.roots = None if roots is None else [str(r) for r in roots]
        self.min_chars = min_chars
        self.min_files = min_files
        self._docs: list[tuple[Path, str]] | None = None
        self.files_read: list[str] = []  # set by load: the files its prompts were cut from

    def _text(self, path: Path, label: str) -> str:
        header = self.spec.header.format(label=label)
        return header + _with_newline(self.spec.read(path))

    def _collect(self) -> list[tuple[Path, str]]:
        """(path, label) of the usable files, in sampling order."""
        docs, digests = [], set()
        for path, label in kind_files(self.kind, self.roots):
            text = self.spec.read(path)
            digest = hashlib.sha256(text.encode("utf-8", errors="replace")).digest()
            if len(text) >= self.min_chars and digest not in digests:
                digests.add(digest)
                docs.append((path, label))
        if len(docs) < self.min_files:
            where = "data.roots " + ", ".join(self.roots) if self.roots else "the default places"
            raise ValueError(
                f"localtext kind {self.kind!r}: only {len(docs)} files of >= "
                f"{self.min_chars} characters in {where} (need data.min_files={self.min_files})"
            )
        random.Random(self.seed).shuffle(docs)
        return docs

    def docs(self) -> list[tuple[Path, str]]:
        if self._docs is None:
            self._docs = self._collect()
        return self._docs

    def files(self) -> list[str]:
        """The paths used, in sampling order (file i starts sample i)."""
        return [str(path) for path, _ in self.docs()]

    def load(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str,
        context_len: int | None = None,
    ) -> list[Sample]:
        """``num_samples`` prompts of exactly ``prompt_tokens`` ids (``prompt_format`` unused)."""
        if prompt_format != "raw":
            log.info("localtext is a continuation task: using raw prompts, not %s", prompt_format)
        docs = self.docs()
        count = len(docs) if self.num_samples is None else min(self.num_samples, len(docs))
        read: set[int] = set()

        def text(k: int) -> str:
            read.add(k)
            return self._text(*docs[k])

        samples = continuation_samples(
            tokenizer,
            [label for _, label in docs],
            text,
            prompt_tokens=self.prompt_tokens,
            count=count,
            id_prefix=f"localtext/{self.kind}",
            corpus=f"localtext {self.kind}",
        )
        self.files_read = [str(docs[k][0]) for k in sorted(read)]
        return samples
