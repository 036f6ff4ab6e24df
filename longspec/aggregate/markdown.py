"""``summary.md``: the paper table, the failed jobs, the job placement and the plots."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from longspec.aggregate.jobs import MISSING, Failure, Job, Report
from longspec.aggregate.speedups import BASELINE_METHOD
from longspec.aggregate.tables import (
    METRIC_HEADERS,
    METRICS,
    fmt,
    job_metric,
    rel_path,
    table_layout,
)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows]
    return lines


def paper_table_md(jobs: list[Job]) -> list[str]:
    rows, tasks, cells = table_layout(jobs)
    header = ["model", "method"] + [f"{t} {METRIC_HEADERS[m]}" for t in tasks for m in METRICS]
    body = []
    for model, method in rows:
        line = [model, method]
        for task in tasks:
            job = cells.get((model, method, task))
            line += [fmt(job_metric(job, m), m) if job else MISSING for m in METRICS]
        body.append(line)
    return markdown_table(header, body)


def placement_md(records: list[dict[str, Any]]) -> list[str]:
    """Where and when jobs ran, when a launcher recorded it (job_info.json)."""
    placed = [r for r in records if r.get("start") is not None]
    if not placed:
        return []
    header = ["job", "method", "CUDA_VISIBLE_DEVICES", "concurrent", "start", "end"]
    t0 = min(r["start"] for r in placed)
    rows = [
        [
            r["job"],
            f"{r['model']} {r['method']} {r['task']}",
            r.get("cuda_visible_devices") or MISSING,
            r.get("concurrent_jobs") or MISSING,
            f"+{r['start'] - t0:.1f}s",
            f"+{r['end'] - t0:.1f}s" if r.get("end") else MISSING,
        ]
        for r in placed
    ]
    peak = max_overlap([(r["start"], r.get("end") or r["start"]) for r in placed])
    return ["## Job placement", "", f"Most jobs running at once: {peak}.", ""] + markdown_table(
        header, rows
    )


def max_overlap(spans: Iterable[tuple[float, float]]) -> int:
    """Largest number of [start, end) spans covering one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, delta in events:
        running += delta
        peak = max(peak, running)
    return peak


def failures_md(failures: list[Failure], sweep_dir: Path) -> list[str]:
    if not failures:
        return []
    rows = [
        [rel_path(f.path, sweep_dir), " ".join(f.overrides) or MISSING, f.reason] for f in failures
    ]
    return ["## Failed jobs", ""] + markdown_table(["job", "overrides", "reason"], rows)


def summary_md(report: Report, records: list[dict[str, Any]], plots: list[Path]) -> str:
    jobs, failures = report.jobs, report.failures
    lines = [
        f"# Sweep {report.sweep_dir}",
        "",
        f"{len(jobs)} finished jobs, {len(failures)} failed. Speedup is decode tokens/s over "
        f"the `{BASELINE_METHOD}` row of the same model and task (prefill excluded).",
        "",
    ]
    if jobs:
        lines += paper_table_md(jobs) + [""]
    lines += failures_md(failures, report.sweep_dir) + ([""] if failures else [])
    placement = placement_md(records)
    lines += placement + ([""] if placement else [])
    lines += [f"![{p.stem}]({p.name})" for p in plots]
    return "\n".join(lines).rstrip() + "\n"
