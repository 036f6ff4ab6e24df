"""Pin each job of a ``hydra/launcher=gpus`` sweep to its own GPU(s).

- :class:`GpuLock` (``conf/hydra/launcher/gpus.yaml``): before a job starts, take a free GPU
  (an ``fcntl`` lock file per GPU under the sweep dir) and set ``CUDA_VISIBLE_DEVICES``
  before anything initialises CUDA; record placement and wall-clock span in
  ``<job_dir>/job_info.json`` (also under ``job`` in the job's summary.json).
- ``${longspec.gpu_slots:K}`` (registered by ``longspec.resolvers``): how many jobs of K GPUs
  fit this node.

Why joblib + locks rather than a scheduler: the joblib launcher already queues jobs over
``n_jobs`` worker processes (one per GPU slot); the lock only decides *which* GPU a worker
uses. A worker process that has initialised CUDA keeps its GPU for the rest of its life (a
process cannot move to another device once CUDA is up), so ``n_jobs`` must not exceed the
number of GPU slots -- ``conf/hydra/launcher/gpus.yaml`` sizes it from the same GPU list.
Locks die with their process, so a crashed worker never leaves a GPU taken.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from longspec.callbacks import is_multirun, job_dir_of, sweep_dir_of
from longspec.results import write_json_atomic

log = logging.getLogger(__name__)

JOB_INFO_FILE = "job_info.json"
SUMMARY_FILE = "summary.json"
LOCK_DIR_NAME = ".gpu_locks"
FAKE_GPUS_ENV = "LONGSPEC_FAKE_GPUS"  # N -> pretend GPUs 0..N-1 exist (tests, CPU)


# ---------------------------------------------------------------------------------------------
# GPUs: discovery, slots, locks


def nvidia_smi(*args: str) -> list[str]:
    """Lines printed by ``nvidia-smi`` (without touching CUDA), or [] when unavailable."""
    try:
        out = subprocess.run(
            ["nvidia-smi", *args], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip()]


def discover_gpus(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this node offers: ``$LONGSPEC_FAKE_GPUS`` (N fake ids), else the ids in
    ``$CUDA_VISIBLE_DEVICES``, else every GPU ``nvidia-smi -L`` lists."""
    env = os.environ if env is None else env
    if env.get(FAKE_GPUS_ENV):
        return [str(i) for i in range(int(env[FAKE_GPUS_ENV]))]
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [i.strip() for i in env["CUDA_VISIBLE_DEVICES"].split(",")]
        return [i for i in ids if i and not i.startswith("-")]
    return [str(i) for i, line in enumerate(nvidia_smi("-L")) if line.startswith("GPU ")]


def gpu_names() -> dict[str, str]:
    """Physical index -> card name, from nvidia-smi ({} without it)."""
    names = {}
    for line in nvidia_smi("--query-gpu=index,name", "--format=csv,noheader"):
        index, _, name = line.partition(",")
        names[index.strip()] = name.strip()
    return names


def gpu_slots(gpu_ids: Sequence[str], gpus_per_job: int) -> list[tuple[str, ...]]:
    """Disjoint groups of ``gpus_per_job`` consecutive ids (leftover GPUs stay unused)."""
    if gpus_per_job < 1:
        raise ValueError(f"gpus_per_job must be >= 1, got {gpus_per_job}")
    n = len(gpu_ids) // gpus_per_job
    return [tuple(gpu_ids[i * gpus_per_job : (i + 1) * gpus_per_job]) for i in range(n)]


def num_slots(gpus_per_job: int | str = 1) -> int:
    """How many jobs run at once (OmegaConf resolver ``longspec.gpu_slots``); 1 without GPUs."""
    return max(1, len(gpu_slots(discover_gpus(), int(gpus_per_job))))


def lock_path(lock_dir: Path, gpu_id: str) -> Path:
    return lock_dir / f"gpu-{re.sub(r'[^A-Za-z0-9_.-]', '_', gpu_id)}.lock"


def try_lock(path: Path) -> int | None:
    """An fd holding an exclusive lock on ``path``, or None when another holder has it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def unlock(fds: Sequence[int]) -> None:
    for fd in fds:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@dataclass
class HeldGpus:
    """GPUs this process holds: their ids and the lock fds."""

    ids: tuple[str, ...]
    fds: list[int]

    def release(self) -> None:
        unlock(self.fds)
        self.fds = []


def try_slot(lock_dir: Path, slot: Sequence[str]) -> HeldGpus | None:
    """Lock every GPU of ``slot`` or none of them."""
    fds = []
    for gpu in slot:
        fd = try_lock(lock_path(lock_dir, gpu))
        if fd is None:
            unlock(fds)
            return None
        fds.append(fd)
    return HeldGpus(tuple(slot), fds)


def acquire(
    lock_dir: Path,
    slots: Sequence[Sequence[str]],
    poll_s: float = 1.0,
    timeout_s: float | None = None,
) -> HeldGpus:
    """Block until one slot's GPUs are all free, lock them and return them."""
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    waiting_logged = False
    while True:
        for slot in slots:
            held = try_slot(lock_dir, slot)
            if held is not None:
                return held
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no free GPU slot among {list(slots)} after {timeout_s} s")
        if not waiting_logged:
            log.info("all GPU slots busy; waiting for one to free (%s)", lock_dir)
            waiting_logged = True
        time.sleep(poll_s)


def held_count(lock_dir: Path, gpu_ids: Sequence[str]) -> int:
    """How many of the GPUs are locked right now (by any process, this one included)."""
    busy = 0
    for gpu in gpu_ids:
        path = lock_path(lock_dir, gpu)
        if not path.exists():
            continue
        fd = try_lock(path)
        if fd is None:
            busy += 1
        else:
            unlock([fd])
    return busy


def cuda_initialized() -> bool:
    """Whether this process has already initialised CUDA (then its GPU can't change)."""
    torch = sys.modules.get("torch")
    return bool(torch is not None and torch.cuda.is_initialized())


# ---------------------------------------------------------------------------------------------
# The Hydra callback


def now() -> dict[str, Any]:
    t = time.time()
    return {"epoch": t, "iso": datetime.fromtimestamp(t).astimezone().isoformat()}


# The GPUs this worker process holds; kept across jobs once CUDA is initialised.
_HELD: HeldGpus | None = None


class GpuLock(Callback):
    """Pin each sweep job to ``gpus_per_job`` free GPUs before CUDA initialises.

    ``gpu_ids`` defaults to :func:`discover_gpus`, evaluated once in the launching process
    (workers must not read the ``CUDA_VISIBLE_DEVICES`` an earlier job set). ``lock_dir``
    defaults to ``<sweep_dir>/.gpu_locks``; point several sweeps at one shared dir (e.g.
    ``/tmp/longspec-gpu-locks``) to keep them off each other's GPUs. A job config's
    ``resources.gpus_per_job`` (when the schema has it) wins over ``gpus_per_job``.
    """

    def __init__(
        self,
        gpus_per_job: int = 1,
        lock_dir: str | None = None,
        poll_s: float = 1.0,
        gpu_ids: Sequence[str] | None = None,
    ) -> None:
        self.gpus_per_job = int(gpus_per_job)
        self.lock_dir = lock_dir
        self.poll_s = poll_s
        self.gpu_ids = [str(g) for g in gpu_ids] if gpu_ids is not None else discover_gpus()
        self.names = gpu_names() if self.gpu_ids and not os.environ.get(FAKE_GPUS_ENV) else {}

    def _lock_dir(self, config: DictConfig) -> Path:
        return Path(self.lock_dir) if self.lock_dir else sweep_dir_of(config) / LOCK_DIR_NAME

    def _per_job(self, config: DictConfig) -> int:
        return int(OmegaConf.select(config, "resources.gpus_per_job") or self.gpus_per_job)

    def _hold(self, config: DictConfig) -> HeldGpus:
        global _HELD
        slots = gpu_slots(self.gpu_ids, self._per_job(config))
        if not slots:
            raise RuntimeError(f"{self._per_job(config)} GPUs per job but only {self.gpu_ids}")
        if _HELD is not None and list(_HELD.ids) in [list(s) for s in slots]:
            return _HELD  # this worker already owns (and may have initialised) these GPUs
        _HELD = acquire(self._lock_dir(config), slots, self.poll_s)
        return _HELD

    def _placement(self, config: DictConfig, held: HeldGpus) -> dict[str, Any]:
        """The job's GPUs, their names, and how many jobs hold GPUs right now."""
        busy = held_count(self._lock_dir(config), self.gpu_ids)
        return {
            "gpu_ids": list(held.ids),
            "gpu_names": [self.names.get(i) for i in held.ids],
            "gpu_slots": len(gpu_slots(self.gpu_ids, len(held.ids))),
            "concurrent_jobs": busy // len(held.ids),
        }

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if not is_multirun(config):
            return
        info: dict[str, Any] = {"hostname": socket.gethostname(), "pid": os.getpid()}
        if self.gpu_ids:
            held = self._hold(config)
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(held.ids)
            info |= self._placement(config, held)
        start = now()
        info |= {
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "start": start["epoch"],
            "start_iso": start["iso"],
        }
        write_json_atomic(job_dir_of(config) / JOB_INFO_FILE, info)

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        global _HELD
        if not is_multirun(config):
            return
        path = job_dir_of(config) / JOB_INFO_FILE
        info = _read_info(path)
        end = now()
        info |= {"end": end["epoch"], "end_iso": end["iso"], "status": job_status(job_return)}
        write_json_atomic(path, info)
        complete_summary(job_dir_of(config), info)
        if _HELD is not None and not cuda_initialized():
            _HELD.release()
            _HELD = None


def complete_summary(job_dir: Path, info: dict[str, Any]) -> None:
    """Put the finished ``info`` (with its end and status) into summary.json as ``job``,
    when this job wrote that summary (the runner copies job_info.json there at its start;
    a summary of an earlier run, e.g. a resumed finished job, is left as it is)."""
    path = job_dir / SUMMARY_FILE
    summary = _read_info(path)
    job = summary.get("job")
    if isinstance(job, dict) and job.get("start") == info.get("start"):
        write_json_atomic(path, summary | {"job": info})


def job_status(job_return: JobReturn) -> str:
    """COMPLETED or FAILED (also when RecordFailures already marked the failure handled)."""
    failed = isinstance(getattr(job_return, "_return_value", None), BaseException)
    return JobStatus.FAILED.name if failed else job_return.status.name


def _read_info(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}
