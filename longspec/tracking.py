"""Experiment trackers behind one small contract; results files stay the source of truth."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def start(self, config: dict, names: dict[str, str], job_dir: Path) -> None: ...

    def log_sample(self, record: dict) -> None: ...

    def finish(self, summary: dict | None, failed: bool = False) -> None: ...


class NoLogger:
    """``logger=none``: nothing beyond results.jsonl and summary.json."""

    def start(self, config: dict, names: dict[str, str], job_dir: Path) -> None:
        return None

    def log_sample(self, record: dict) -> None:
        return None

    def finish(self, summary: dict[str, Any] | None, failed: bool = False) -> None:
        return None
