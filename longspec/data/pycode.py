"""pycode: a local long-context code-completion task built from Python's standard library.

Source files: the ``*.py`` files under ``sysconfig.get_paths()["stdlib"]`` of the running
interpreter (or ``data.root``), leaving out tests, third-party packages, demos, generated
tables and data modules (see ``EXCLUDED_DIRS`` / ``_is_source_file``).

Split rule (by file, deterministic, machine-independent for a given Python version):
``int(sha256(relpath).hexdigest()[:8], 16) % 10 == 0`` -> ``eval``, else ``train``, where
``relpath`` is the POSIX path relative to the root (e.g. ``"asyncio/tasks.py"``). The
GLIDE training script uses ``split_files("train")``; benchmarks use ``eval``.

Prompts (``longspec.data.continuation``, shared with ``localtext``): sample ``i`` starts at
the ``i``-th file of the split shuffled by ``data.seed`` and continues with the following
files (wrapping around) until it is long enough; each file is preceded by a
``# file: <relpath>`` line. The token ids are cut so that the prompt has exactly
``data.prompt_tokens`` ids including the special prefix (BOS) that the tokenizer puts in
front of a text; ``prompt`` is the decoded cut. There is no instruction: the model simply
continues the code, so pycode always uses the ``raw`` prompt format, whatever
``model.prompt_format`` says.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from longspec.data.continuation import continuation_samples
from longspec.data.sample import Sample, check_num_samples

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

SPLITS = ("train", "eval")
EVAL_BUCKETS = 10  # one file in ten (by hash) is held out for evaluation
EXCLUDED_DIRS = frozenset(
    {
        "__pycache__",
        "site-packages",
        "dist-packages",
        "lib-dynload",
        "test",
        "tests",
        "idle_test",
        "idlelib",
        "turtledemo",
        "lib2to3",  # mostly fixer boilerplate and test data
        "encodings",  # generated codec tables
        "pydoc_data",  # one generated text module
        "ensurepip",
        "__phello__",
    }
)
EXCLUDED_FILES = frozenset({"this.py", "antigravity.py", "__hello__.py"})


def stdlib_root() -> Path:
    """The running interpreter's standard library directory."""
    return Path(sysconfig.get_paths()["stdlib"])


def _is_source_file(name: str) -> bool:
    """A ``.py`` file worth completing (no tests, no generated sysconfig data)."""
    return (
        name.endswith(".py")
        and name not in EXCLUDED_FILES
        and not name.startswith(("test_", "_sysconfigdata"))
    )


def _is_source_dir(name: str) -> bool:
    return name not in EXCLUDED_DIRS and not name.startswith(("config-", "."))


def source_files(root: Path) -> list[str]:
    """Relative POSIX paths of all source files under ``root``, sorted."""
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if _is_source_dir(d)]  # prune in place
        rel_dir = Path(dirpath).relative_to(root)
        found += [(rel_dir / f).as_posix() for f in filenames if _is_source_file(f)]
    return sorted(found)


def file_split(relpath: str) -> str:
    """``eval`` or ``train`` for a file, from a hash of its relative POSIX path."""
    bucket = int(hashlib.sha256(relpath.encode("utf-8")).hexdigest()[:8], 16) % EVAL_BUCKETS
    return "eval" if bucket == 0 else "train"


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise ValueError(f"data.split must be one of {', '.join(SPLITS)}, got {split!r}")
    return split


def split_files(split: str, root: str | Path | None = None) -> list[Path]:
    """Absolute paths of the files in ``split`` (``train`` or ``eval``), sorted by relpath."""
    _check_split(split)
    base = Path(root) if root is not None else stdlib_root()
    return [base / rel for rel in source_files(base) if file_split(rel) == split]


def _read_source(path: Path) -> str:
    text = path.read_text(encoding="utf-8", errors="replace")
    return text if text.endswith("\n") else text + "\n"


def headed_source(path: Path, root: Path) -> str:
    """A file's text preceded by its ``# file: <relpath>`` line (prompts and training)."""
    return f"# file: {path.relative_to(root).as_posix()}\n{_read_source(path)}"


class PyCodeDataset:
    """Code-continuation prompts from the stdlib (``data=pycode``).

    Settings: ``split`` (eval|train), ``prompt_tokens`` (exact prompt length in ids, BOS
    included), ``num_samples`` (null = one per file of the split), ``seed`` (file order),
    ``root`` (null = the interpreter's stdlib; any directory of ``.py`` files otherwise).
    """

    def __init__(
        self,
        split: str = "eval",
        prompt_tokens: int = 2048,
        num_samples: int | None = None,
        seed: int = 0,
        root: str | None = None,
    ) -> None:
        if prompt_tokens < 1:
            raise ValueError(f"data.prompt_tokens must be >= 1, got {prompt_tokens}")
        self.split = _check_split(split)
        self.prompt_tokens = prompt_tokens
        self.num_samples = check_num_samples(num_samples)
        self.seed = seed
        self.root = Path(root).expanduser() if root is not None else stdlib_root()

    def _ordered_files(self) -> list[Path]:
        files = split_files(self.split, self.root)
        if not files:
            raise ValueError(f"pycode found no {self.split} files under {self.root}")
        random.Random(self.seed).shuffle(files)
        return files

    def load(
        self,
        tokenizer: PreTrainedTokenizerBase,
        prompt_format: str,
        context_len: int | None = None,
    ) -> list[Sample]:
        """``num_samples`` prompts of exactly ``prompt_tokens`` ids (``prompt_format`` unused)."""
        if prompt_format != "raw":
            log.info("pycode is a continuation task: using raw prompts, not %s", prompt_format)
        files = self._ordered_files()
        count = len(files) if self.num_samples is None else min(self.num_samples, len(files))
        return continuation_samples(
            tokenizer,
            [p.relative_to(self.root).as_posix() for p in files],
            lambda k: headed_source(files[k], self.root),
            prompt_tokens=self.prompt_tokens,
            count=count,
            id_prefix=f"pycode/{self.split}",
            corpus="pycode",
        )
