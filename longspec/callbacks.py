"""Hydra callbacks for sweeps: keep going past failed jobs and aggregate at the end.

- :class:`RecordFailures` (``conf/config.yaml``): in a multirun a failed job writes
  ``<job_dir>/error.txt`` (one line: the reason) and the other jobs go on; when the sweep ends
  with failures the process exits with status 1 (after the aggregation).
- :class:`AggregateOnMultirunEnd` (``conf/config.yaml``): ``longspec.aggregate`` on the sweep
  dir once every job is done.

Pinning each job of a ``hydra/launcher=gpus`` sweep to its own GPU(s) is
:class:`longspec.gpu_lock.GpuLock`.
"""

from __future__ import annotations

import logging
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from longspec.resolvers import register_resolvers

log = logging.getLogger(__name__)

ERROR_FILE = "error.txt"


def is_multirun(config: DictConfig) -> bool:
    return OmegaConf.select(config, "hydra.mode") == RunMode.MULTIRUN


def job_dir_of(config: DictConfig) -> Path:
    return Path(str(config.hydra.runtime.output_dir))


def sweep_dir_of(config: DictConfig) -> Path:
    return Path(str(config.hydra.sweep.dir))


# ---------------------------------------------------------------------------------------------
# Failed jobs


def error_line(err: BaseException) -> str:
    """One line naming the exception (what the aggregate lists as the reason)."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def write_error(job_dir: Path, err: BaseException) -> Path:
    """``error.txt``: the one-line reason, then the traceback."""
    path = job_dir / ERROR_FILE
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    path.write_text(f"{error_line(err)}\n\n{trace}")
    return path


class RecordFailures(Callback):
    """In a multirun, turn a job's exception into ``error.txt`` so the sweep goes on.

    Hydra's sweeper re-raises the first failed job after its batch, which skips
    ``on_multirun_end`` (no aggregation) and hides the other failures. This callback marks
    the failed job's return as handled after writing its reason; at the end of the sweep it
    exits with ``exit_code`` when any job of this sweep failed (0 to disable).
    User errors reach it as exceptions too: inside a sweep the entry point raises them
    rather than exiting (``longspec.errors.exit_on_user_error``).
    """

    def __init__(self, exit_code: int = 1) -> None:
        self.exit_code = exit_code
        self._started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._started = time.time()

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_multirun(config):
            return
        (job_dir_of(config) / ERROR_FILE).unlink(missing_ok=True)  # stale, from a rerun

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        if not is_multirun(config):
            return
        if job_return.status != JobStatus.FAILED:
            return
        err = job_return._return_value
        path = write_error(job_dir_of(config), err)
        log.error("job %s failed (%s); see %s", config.hydra.job.num, error_line(err), path)
        job_return.status = JobStatus.COMPLETED  # handled: the sweep goes on

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        failed = recent_errors(sweep_dir_of(config), self._started)
        if failed and self.exit_code:
            log.error("%d job(s) failed: %s", len(failed), ", ".join(map(str, failed)))
            sys.exit(self.exit_code)


def recent_errors(sweep_dir: Path, since: float) -> list[Path]:
    """error.txt files below sweep_dir written since ``since`` (epoch seconds)."""
    if not sweep_dir.is_dir():
        return []
    return sorted(p for p in sweep_dir.rglob(ERROR_FILE) if p.stat().st_mtime >= since)


# ---------------------------------------------------------------------------------------------
# Aggregation


class AggregateOnMultirunEnd(Callback):
    """Run ``longspec.aggregate`` on the sweep dir when a multirun ends."""

    def __init__(self, enabled: bool = True, plots: bool = True) -> None:
        self.enabled = enabled
        self.plots = plots

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        if not self.enabled:
            return
        from longspec.aggregate import aggregate

        sweep_dir = sweep_dir_of(config)
        report = aggregate(sweep_dir, plots=self.plots)
        log.info(
            "aggregated %d jobs (%d failed) into %s",
            len(report.jobs),
            len(report.failures),
            sweep_dir / "summary.md",
        )


# Hydra imports this module (also through longspec.gpu_lock) for its callbacks before it
# resolves the launcher's settings (``${longspec.gpu_slots:K}``), also in apps that never
# call longspec.config.register().
register_resolvers()
