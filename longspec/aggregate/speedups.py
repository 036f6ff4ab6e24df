"""Methods and speedups: name each job's method (its decode choice plus the settings that
vary) and compute its speedup over the vanilla job of the same model and task."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from longspec.aggregate.jobs import MISSING, Job, group_by

BASELINE_METHOD = "vanilla"
# Overrides that place a job in the table (row/column) rather than name a method variant.
IDENTITY_KEYS = frozenset({"model", "data", "data.task", "decode"})


def varying_keys(params: Sequence[Mapping[str, str]]) -> list[str]:
    """Keys whose value differs (or is missing) between some of the given jobs."""
    keys = sorted({k for p in params for k in p} - IDENTITY_KEYS)
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def short_key(key: str) -> str:
    return key.removeprefix("decode.")


def label_methods(jobs: list[Job]) -> None:
    """Set ``job.method``: the decode choice plus the settings that vary between the jobs of
    that decode choice (the same labels in every model and task, so rows line up)."""
    for group in group_by(jobs, lambda j: j.decode).values():
        keys = varying_keys([j.params for j in group])
        for job in group:
            extra = [f"{short_key(k)}={job.params.get(k, MISSING)}" for k in keys]
            job.method = " ".join([job.decode, *extra])


def _similarity(a: Mapping[str, str], b: Mapping[str, str]) -> int:
    """How many non-decode settings two jobs share (picks the matching vanilla row)."""
    keys = (set(a) | set(b)) - IDENTITY_KEYS
    return sum(a.get(k) == b.get(k) for k in keys if not k.startswith("decode."))


def baseline_for(job: Job, candidates: Sequence[Job]) -> Job | None:
    if not candidates:
        return None
    return max(candidates, key=lambda c: _similarity(job.params, c.params))


def ratio(numerator: Any, denominator: Any) -> float | None:
    if not isinstance(numerator, int | float) or not isinstance(denominator, int | float):
        return None
    return numerator / denominator if denominator > 0 else None


def compute_speedups(jobs: list[Job]) -> None:
    """``job.speedup``: tokens/s over the sweep's vanilla job of the same model and task,
    else the job's own in-run baseline speedup (summary ``speedup``), else None."""
    for group in group_by(jobs, lambda j: (j.model, j.task)).values():
        vanillas = [j for j in group if j.decode == BASELINE_METHOD]
        for job in group:
            base = baseline_for(job, vanillas)
            tps = job.summary.get("tokens_per_s")
            speedup = ratio(tps, base.summary.get("tokens_per_s")) if base else None
            job.speedup = speedup if speedup is not None else job.summary.get("speedup")
