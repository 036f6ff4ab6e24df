"""Sweep dir -> the paper's table (CSV + markdown), failed jobs, and plots.

``python -m longspec.aggregate SWEEP_DIR [--out DIR]`` finds every ``summary.json`` below
SWEEP_DIR and writes into it (or DIR):

- ``summary.csv`` / ``summary.md``: rows model x method, per data task the columns tau,
  tokens/s and speedup over the ``vanilla`` row of the same model and task (a job's own
  in-run ``baseline`` speedup when the sweep has no vanilla row). A method is the decode
  choice plus whatever else varies between the jobs of that decode choice (e.g.
  ``tree tree_shape=[4,16]``), read from each job's ``.hydra/overrides.yaml``.
- ``jobs.csv``: one row per job (placement and wall-clock span from ``job_info.json``).
- ``speedup.png`` (bars per task) and ``vs_tree_size.png`` / ``vs_gamma.png`` (tau and
  tokens/s against the swept parameter) when the sweep has the data for them.

Failed jobs (a ``.hydra`` dir without ``summary.json``, or an ``error.txt``) are listed in
``summary.md`` with their reason.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from longspec.plotting import pyplot, save

log = logging.getLogger(__name__)

BASELINE_METHOD = "vanilla"
# Paper order first; anything else follows in order of appearance.
METHOD_ORDER = ("vanilla_hf", "vanilla", "magicdec", "seq", "tree")
TASK_ORDER = ("gov_report", "qmsum", "multi_news", "lcc", "repobench-p")
# Overrides that place a job in the table (row/column) rather than name a method variant.
IDENTITY_KEYS = frozenset({"model", "data", "data.task", "decode"})
# Config subtrees compared when a job has no overrides file.
VARIANT_SUBTREES = ("decode", "attention", "generation")
METRIC_HEADERS = {"tau": "tau", "tokens_per_s": "tok/s", "speedup": "speedup"}
METRIC_FORMATS = {"tau": "{:.2f}", "tokens_per_s": "{:.1f}", "speedup": "{:.2f}x"}
MISSING = "-"
SKIP_DIRS = frozenset({"wandb", ".submitit", ".gpu_locks"})


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


# ---------------------------------------------------------------------------------------------
# Reading a sweep


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


# ---------------------------------------------------------------------------------------------
# Methods and speedups


def _group(jobs: Iterable[Job], key: Callable[[Job], Any]) -> dict[Any, list[Job]]:
    groups: dict[Any, list[Job]] = {}
    for job in jobs:
        groups.setdefault(key(job), []).append(job)
    return groups


def varying_keys(params: Sequence[Mapping[str, str]]) -> list[str]:
    """Keys whose value differs (or is missing) between some of the given jobs."""
    keys = sorted({k for p in params for k in p} - IDENTITY_KEYS)
    return [k for k in keys if len({p.get(k) for p in params}) > 1]


def short_key(key: str) -> str:
    return key.removeprefix("decode.")


def label_methods(jobs: list[Job]) -> None:
    """Set ``job.method``: the decode choice plus the settings that vary between the jobs of
    that decode choice (the same labels in every model and task, so rows line up)."""
    for group in _group(jobs, lambda j: j.decode).values():
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
    for group in _group(jobs, lambda j: (j.model, j.task)).values():
        vanillas = [j for j in group if j.decode == BASELINE_METHOD]
        for job in group:
            base = baseline_for(job, vanillas)
            tps = job.summary.get("tokens_per_s")
            speedup = ratio(tps, base.summary.get("tokens_per_s")) if base else None
            job.speedup = speedup if speedup is not None else job.summary.get("speedup")


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
    record: dict[str, Any] = {"job": _rel(job.path, sweep_dir), "model": job.model}
    record |= {"method": job.method, "task": job.task}
    for column in JOB_COLUMNS[4:]:
        record[column] = next((s[column] for s in sources if s.get(column) is not None), None)
    return record


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


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
    rows = [[_rel(f.path, sweep_dir), " ".join(f.overrides) or MISSING, f.reason] for f in failures]
    return ["## Failed jobs", ""] + markdown_table(["job", "overrides", "reason"], rows)


# ---------------------------------------------------------------------------------------------
# Plots


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
    lines = _group(points, lambda p: f"{p[1].model} {p[1].task} {p[1].decode}")
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


# ---------------------------------------------------------------------------------------------
# Entry points


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


def aggregate(sweep_dir: Path | str, out: Path | str | None = None, plots: bool = True) -> Report:
    """Read a sweep dir and write summary.csv, summary.md, jobs.csv and plots into ``out``."""
    sweep_dir = Path(sweep_dir)
    out = Path(out) if out is not None else sweep_dir
    out.mkdir(parents=True, exist_ok=True)
    jobs = find_jobs(sweep_dir)
    label_methods(jobs)
    compute_speedups(jobs)
    report = Report(sweep_dir, jobs, find_failures(sweep_dir), [])
    records = [job_record(j, sweep_dir) for j in jobs]
    header, rows = table_rows(jobs)
    report.files += [write_csv(out / "summary.csv", header, rows)]
    report.files += [
        write_csv(out / "jobs.csv", JOB_COLUMNS, ([r[c] for c in JOB_COLUMNS] for r in records))
    ]
    pngs = write_plots(jobs, out) if plots and jobs else []
    (out / "summary.md").write_text(summary_md(report, records, pngs))
    report.files += [out / "summary.md", *pngs]
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longspec.aggregate",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", type=Path, help="a multirun dir (or any dir of job dirs)")
    parser.add_argument("--out", type=Path, default=None, help="output dir (default: sweep_dir)")
    parser.add_argument("--no-plots", action="store_true", help="tables only")
    args = parser.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a directory", file=sys.stderr)
        return 2
    report = aggregate(args.sweep_dir, args.out, plots=not args.no_plots)
    print((Path(args.out or args.sweep_dir) / "summary.md").read_text(), end="")
    if not report.jobs and not report.failures:
        print(f"error: no summary.json below {args.sweep_dir}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
