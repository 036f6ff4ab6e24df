"""Plots of a sweep: ``speedup.png`` (bars per task) and ``vs_<axis>.png`` (tau and
tokens/s against a swept parameter)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from longspec.aggregate.jobs import Job, group_by
from longspec.aggregate.tables import METRIC_HEADERS, table_layout
from longspec.plotting import pyplot, save


def tree_size(config: Mapping[str, Any]) -> float | None:
    shape = (config.get("decode") or {}).get("tree_shape")
    return float(sum(shape)) if isinstance(shape, list) and shape else None


def gamma(config: Mapping[str, Any]) -> float | None:
    value = (config.get("decode") or {}).get("gamma")
    return float(value) if isinstance(value, int | float) else None


# Swept parameters worth a plot: name -> how to read it from a job's config.
SWEEP_AXES: dict[str, Callable[[Mapping[str, Any]], float | None]] = {
    "tree_size": tree_size,
    "gamma": gamma,
}
AXIS_LABELS = {"tree_size": "tree size (sum of tree_shape)", "gamma": "gamma (draft tokens)"}


def plot_speedup(jobs: list[Job], path: Path) -> Path | None:
    """One bar chart per task: speedup of each method per model."""
    rows, tasks, cells = table_layout(jobs)
    if not any(j.speedup is not None for j in jobs):
        return None
    plt = pyplot()
    models = list(dict.fromkeys(m for m, _ in rows))
    methods = list(dict.fromkeys(meth for _, meth in rows))
    fig, axes = plt.subplots(1, len(tasks), figsize=(4 + 2 * len(models) * len(tasks), 4))
    axes = axes if len(tasks) > 1 else [axes]
    width = 0.8 / max(len(methods), 1)
    for ax, task in zip(axes, tasks, strict=True):
        for i, method in enumerate(methods):
            values = [_speedup_or_nan(cells.get((m, method, task))) for m in models]
            ax.bar([x + i * width for x in range(len(models))], values, width, label=method)
        ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
        ax.set_xticks([x + width * (len(methods) - 1) / 2 for x in range(len(models))], models)
        ax.set_title(task)
        ax.set_ylabel("speedup over vanilla")
    axes[-1].legend(fontsize="small")
    return save(fig, plt, path)


def _speedup_or_nan(job: Job | None) -> float:
    return float("nan") if job is None or job.speedup is None else float(job.speedup)


def plot_against(jobs: list[Job], axis: str, path: Path) -> Path | None:
    """tau and tokens/s against a swept parameter; None unless it takes 2+ values."""
    read = SWEEP_AXES[axis]
    points = [(read(j.config), j) for j in jobs]
    points = [(x, j) for x, j in points if x is not None]
    if len({x for x, _ in points}) < 2:
        return None
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    lines = group_by(points, lambda p: f"{p[1].model} {p[1].task} {p[1].decode}")
    for label, line in lines.items():
        line.sort(key=lambda p: p[0])
        for ax, metric in zip(axes, ("tau", "tokens_per_s"), strict=True):
            ys = [j.summary.get(metric) for _, j in line]
            ax.plot([x for x, _ in line], ys, marker="o", label=label)
    for ax, metric in zip(axes, ("tau", "tokens_per_s"), strict=True):
        ax.set_xlabel(AXIS_LABELS[axis])
        ax.set_ylabel(METRIC_HEADERS[metric])
    axes[0].legend(fontsize="small")
    return save(fig, plt, path)


def write_plots(jobs: list[Job], out: Path) -> list[Path]:
    paths = [plot_speedup(jobs, out / "speedup.png")]
    paths += [plot_against(jobs, axis, out / f"vs_{axis}.png") for axis in SWEEP_AXES]
    return [p for p in paths if p is not None]
