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
import sys
from collections.abc import Sequence
from pathlib import Path

from longspec.aggregate.jobs import Failure, Job, Report, find_failures, find_jobs
from longspec.aggregate.markdown import summary_md
from longspec.aggregate.plots import write_plots
from longspec.aggregate.speedups import compute_speedups, label_methods
from longspec.aggregate.tables import JOB_COLUMNS, job_record, table_rows, write_csv

__all__ = ["Failure", "Job", "Report", "aggregate", "main"]


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
