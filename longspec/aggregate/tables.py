"""The paper table's layout and cells, the per-job listing, and their CSV files."""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from longspec.aggregate.jobs import MISSING, Job

log = logging.getLogger(__package__)  # "longspec.aggregate", as before the split

# Paper order first; anything else follows in order of appearance.
METHOD_ORDER = ("vanilla_hf", "vanilla", "magicdec", "seq", "tree")
TASK_ORDER = ("gov_report", "qmsum", "multi_news", "lcc", "repobench-p")
METRIC_HEADERS = {"tau": "tau", "tokens_per_s": "tok/s", "speedup": "speedup"}
METRIC_FORMATS = {"tau": "{:.2f}", "tokens_per_s": "{:.1f}", "speedup": "{:.2f}x"}

# Table metrics: name -> how to read it from a job.
METRIC_GETTERS: dict[str, Callable[[Job], Any]] = {
    "tau": lambda job: job.summary.get("tau"),
    "tokens_per_s": lambda job: job.summary.get("tokens_per_s"),
    "speedup": lambda job: job.speedup,
}


METRICS = tuple(METRIC_GETTERS)


def job_metric(job: Job, metric: str) -> Any:
    return METRIC_GETTERS[metric](job)


# ---------------------------------------------------------------------------------------------
# Table layout


def _ordered(values: Iterable[str], preferred: Sequence[str]) -> list[str]:
    seen = list(dict.fromkeys(values))
    rank = {v: i for i, v in enumerate(preferred)}
    return sorted(seen, key=lambda v: (rank.get(v.split(" ")[0], len(rank)), seen.index(v)))


def table_layout(jobs: list[Job]) -> tuple[list[tuple[str, str]], list[str], dict]:
    """Rows (model, method), task columns, and cells {(model, method, task): job}."""
    cells: dict[tuple[str, str, str], Job] = {}
    for job in jobs:
        key = (job.model, job.method, job.task)
        if key in cells:
            log.warning("two jobs for %s: keeping %s over %s", key, job.path, cells[key].path)
        cells[key] = job
    models = list(dict.fromkeys(j.model for j in jobs))
    methods = _ordered((j.method for j in jobs), METHOD_ORDER)
    rows = [(m, meth) for m in models for meth in methods if any(k[:2] == (m, meth) for k in cells)]
    return rows, _ordered((j.task for j in jobs), TASK_ORDER), cells


def fmt(value: Any, metric: str) -> str:
    if not isinstance(value, int | float):
        return MISSING
    return METRIC_FORMATS[metric].format(value)


def table_rows(jobs: list[Job]) -> tuple[list[str], list[list[Any]]]:
    """Header and rows of the wide (paper) table with raw numbers."""
    rows, tasks, cells = table_layout(jobs)
    header = ["model", "method"] + [f"{t}/{m}" for t in tasks for m in METRICS]
    body = []
    for model, method in rows:
        line: list[Any] = [model, method]
        for task in tasks:
            job = cells.get((model, method, task))
            line += [job_metric(job, m) if job else None for m in METRICS]
        body.append(line)
    return header, body


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(["" if v is None else v for v in row] for row in rows)
    return path


# ---------------------------------------------------------------------------------------------
# Per-job listing (placement on GPUs, wall-clock spans)

JOB_COLUMNS = (
    "job",
    "model",
    "method",
    "task",
    "tau",
    "tokens_per_s",
    "end_to_end_tokens_per_s",
    "speedup",
    "n_samples",
    "new_tokens",
    "device_name",
    "cuda_visible_devices",
    "concurrent_jobs",
    "start",
    "end",
)


def job_record(job: Job, sweep_dir: Path) -> dict[str, Any]:
    sources = ({"speedup": job.speedup}, job.info, job.summary)
    record: dict[str, Any] = {"job": rel_path(job.path, sweep_dir), "model": job.model}
    record |= {"method": job.method, "task": job.task}
    for column in JOB_COLUMNS[4:]:
        record[column] = next((s[column] for s in sources if s.get(column) is not None), None)
    return record


def rel_path(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` ("." for root itself), or whole when outside it."""
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)
