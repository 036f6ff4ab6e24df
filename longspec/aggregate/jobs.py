"""Reading a sweep dir: its finished jobs (summary.json, overrides, job_info.json) and its
failed ones (a ``.hydra`` dir without summary.json, or an ``error.txt``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

log = logging.getLogger(__package__)  # "longspec.aggregate", as before the split

# Config subtrees compared when a job has no overrides file.
VARIANT_SUBTREES = ("decode", "attention", "generation")
MISSING = "-"
SKIP_DIRS = frozenset({"wandb", ".submitit", ".gpu_locks"})

T = TypeVar("T")


@dataclass
class Job:
    """One finished job: its dir, summary.json, overrides and launcher job_info.json."""

    path: Path
    summary: dict[str, Any]
    params: dict[str, str] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    method: str = ""
    speedup: float | None = None

    @property
    def model(self) -> str:
        return str(self.summary.get("model", "?"))

    @property
    def decode(self) -> str:
        return str(self.summary.get("decode", "?"))

    @property
    def task(self) -> str:
        return task_of(self.summary)

    @property
    def config(self) -> dict[str, Any]:
        return self.summary.get("config") or {}


@dataclass
class Failure:
    path: Path
    reason: str
    overrides: list[str]


@dataclass
class Report:
    sweep_dir: Path
    jobs: list[Job]
    failures: list[Failure]
    files: list[Path]


def group_by(items: Iterable[T], key: Callable[[T], Any]) -> dict[Any, list[T]]:
    """Items in lists per key, keys and items in order of appearance."""
    groups: dict[Any, list[T]] = {}
    for item in items:
        groups.setdefault(key(item), []).append(item)
    return groups


def task_of(summary: Mapping[str, Any]) -> str:
    """The table column of a job: ``data.task`` (LongBench) or the data choice."""
    data_cfg = (summary.get("config") or {}).get("data") or {}
    task = data_cfg.get("task") if isinstance(data_cfg, Mapping) else None
    return str(task or summary.get("data") or "data")


def read_overrides(job_dir: Path) -> list[str]:
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(o) for o in (yaml.safe_load(path.read_text()) or [])]


def override_params(overrides: Iterable[str]) -> dict[str, str]:
    """``["+a.b=1", "decode=tree"]`` -> ``{"a.b": "1", "decode": "tree"}`` (hydra.* dropped)."""
    params = {}
    for item in overrides:
        key, _, value = item.partition("=")
        key = key.lstrip("+~")
        if not key.startswith("hydra."):
            params[key] = value
    return params


def flatten(obj: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts -> ``{"a.b": "value"}`` (lists kept whole, as JSON)."""
    if not isinstance(obj, Mapping):
        return {prefix: json.dumps(obj, separators=(",", ":"))}
    out: dict[str, str] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def config_params(config: Mapping[str, Any]) -> dict[str, str]:
    """Comparable settings of a job without an overrides file."""
    return {k: v for k, v in flatten(config).items() if k.split(".")[0] in VARIANT_SUBTREES}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def _walk(root: Path, name: str) -> Iterable[Path]:
    """Files called ``name`` below root, outside W&B / submitit / lock dirs."""
    for path in sorted(root.rglob(name)):
        if not SKIP_DIRS.intersection(path.relative_to(root).parts):
            yield path


def load_job(summary_path: Path) -> Job | None:
    summary = _read_json(summary_path)
    if not summary:
        log.warning("skipping unreadable %s", summary_path)
        return None
    job_dir = summary_path.parent
    overrides = read_overrides(job_dir)
    params = override_params(overrides) if overrides else config_params(summary.get("config", {}))
    return Job(job_dir, summary, params, _read_json(job_dir / "job_info.json"))


def find_jobs(sweep_dir: Path) -> list[Job]:
    """Every job below sweep_dir that wrote a summary.json."""
    jobs = (load_job(p) for p in _walk(sweep_dir, "summary.json"))
    return [j for j in jobs if j is not None]


def failure_reason(job_dir: Path) -> str | None:
    """Why a job dir holds no usable result, or None when it finished."""
    error = job_dir / "error.txt"
    if error.is_file():
        lines = error.read_text().strip().splitlines()
        return lines[0] if lines else "error.txt (empty)"
    if (job_dir / "summary.json").is_file():
        return None
    info = _read_json(job_dir / "job_info.json")
    if info.get("start") and not info.get("end"):
        return "no summary.json: the job did not finish (still running or killed)"
    return "no summary.json"


def find_failures(sweep_dir: Path) -> list[Failure]:
    """Job dirs (holding ``.hydra``) without summary.json, or with an error.txt."""
    dirs = {p.parent for p in _walk(sweep_dir, ".hydra")} | {
        p.parent for p in _walk(sweep_dir, "error.txt")
    }
    failures = []
    for job_dir in sorted(dirs):
        reason = failure_reason(job_dir)
        if reason is not None:
            failures.append(Failure(job_dir, reason, read_overrides(job_dir)))
    return failures
