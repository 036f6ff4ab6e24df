"""GPU slots and locks of ``hydra/launcher=gpus``, on CPU with fake GPU ids."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from longspec.callbacks import RecordFailures, error_line
from longspec.gpu_lock import (
    FAKE_GPUS_ENV,
    GpuLock,
    acquire,
    discover_gpus,
    gpu_slots,
    held_count,
    num_slots,
    try_slot,
)

ROOT = Path(__file__).resolve().parents[1]


def test_discover_gpus_sources() -> None:
    assert discover_gpus({FAKE_GPUS_ENV: "3", "CUDA_VISIBLE_DEVICES": "5"}) == ["0", "1", "2"]
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": "2, 3"}) == ["2", "3"]
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert discover_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_gpu_slots_and_resolver(monkeypatch: pytest.MonkeyPatch) -> None:
    ids = ["0", "1", "2", "3", "4"]
    assert gpu_slots(ids, 1) == [(i,) for i in ids]
    assert gpu_slots(ids, 2) == [("0", "1"), ("2", "3")]
    assert gpu_slots(ids, 6) == []
    with pytest.raises(ValueError):
        gpu_slots(ids, 0)
    monkeypatch.setenv(FAKE_GPUS_ENV, "4")
    assert num_slots(1) == 4 and num_slots("2") == 2
    cfg = OmegaConf.create({"n": "${longspec.gpu_slots:2}"})
    assert cfg.n == 2
    monkeypatch.setenv(FAKE_GPUS_ENV, "0")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert num_slots(1) == 1  # no GPU: one job at a time


def test_resources_gpus_per_job_drives_the_lock_and_n_jobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hydra import compose, initialize_config_dir

    from longspec.config import register

    register()
    monkeypatch.setenv(FAKE_GPUS_ENV, "4")
    for per_job, n_jobs in ((1, 4), (2, 2)):
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose(
                "config",
                overrides=["hydra/launcher=gpus", f"resources.gpus_per_job={per_job}"],
                return_hydra_config=True,
            )
        assert cfg.hydra.callbacks.gpu_lock.gpus_per_job == per_job
        assert cfg.hydra.launcher.n_jobs == n_jobs
        assert GpuLock(gpu_ids=["0", "1", "2", "3"])._per_job(cfg) == per_job


def test_slot_locks_are_exclusive_and_all_or_nothing(tmp_path: Path) -> None:
    first = try_slot(tmp_path, ["0", "1"])
    assert first is not None
    assert try_slot(tmp_path, ["1", "2"]) is None  # GPU 1 taken: GPU 2 must stay free
    assert held_count(tmp_path, ["0", "1", "2"]) == 2
    other = try_slot(tmp_path, ["2"])
    assert other is not None
    first.release()
    other.release()
    assert held_count(tmp_path, ["0", "1", "2"]) == 0


def test_acquire_waits_for_a_free_gpu(tmp_path: Path) -> None:
    slots = gpu_slots(["0", "1"], 1)
    a, b = acquire(tmp_path, slots), acquire(tmp_path, slots)
    assert {a.ids, b.ids} == {("0",), ("1",)}
    got: list[tuple[str, ...]] = []
    waiter = threading.Thread(target=lambda: got.append(acquire(tmp_path, slots, 0.05).ids))
    waiter.start()
    time.sleep(0.3)
    assert not got  # both GPUs busy: the third job queues
    b.release()
    waiter.join(timeout=5)
    assert got == [("1",)]
    a.release()
    with pytest.raises(TimeoutError):
        held = acquire(tmp_path, [("0",)], 0.05)
        try:
            acquire(tmp_path, [("0",)], 0.05, timeout_s=0.2)
        finally:
            held.release()


def job_config(tmp_path: Path, num: int) -> OmegaConf:
    return OmegaConf.create(
        {
            "hydra": {
                "mode": "MULTIRUN",
                "sweep": {"dir": str(tmp_path)},
                "runtime": {"output_dir": str(tmp_path / str(num))},
                "job": {"num": num},
            }
        }
    )


def test_gpu_lock_callback_pins_and_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra.types import RunMode

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "7")  # set by an earlier job of this worker
    callback = GpuLock(gpu_ids=["0", "1"])
    cfg = job_config(tmp_path, 0)
    cfg.hydra.mode = RunMode.MULTIRUN
    (tmp_path / "0").mkdir()
    callback.on_job_start(cfg)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0"
    info = json.loads((tmp_path / "0" / "job_info.json").read_text())
    assert info["gpu_ids"] == ["0"] and info["concurrent_jobs"] == 1 and info["gpu_slots"] == 2
    assert held_count(tmp_path / ".gpu_locks", ["0", "1"]) == 1
    ret = JobReturn(status=JobStatus.COMPLETED)
    callback.on_job_end(cfg, job_return=ret)
    info = json.loads((tmp_path / "0" / "job_info.json").read_text())
    assert info["end"] >= info["start"] and info["status"] == "COMPLETED"
    assert held_count(tmp_path / ".gpu_locks", ["0", "1"]) == 0  # CUDA untouched: released


def test_record_failures_writes_error_and_keeps_going(tmp_path: Path) -> None:
    from hydra.types import RunMode

    cfg = job_config(tmp_path, 3)
    cfg.hydra.mode = RunMode.MULTIRUN
    (tmp_path / "3").mkdir()
    callback = RecordFailures()
    (tmp_path / "3" / "error.txt").write_text("stale, from an earlier run")
    callback.on_job_start(cfg)
    assert not (tmp_path / "3" / "error.txt").exists()
    try:
        raise ValueError("no prompt fits\nthe context")
    except ValueError as err:
        ret = JobReturn(status=JobStatus.FAILED, _return_value=err)
    callback.on_job_end(cfg, job_return=ret)
    text = (tmp_path / "3" / "error.txt").read_text()
    assert text.splitlines()[0] == "ValueError: no prompt fits the context"
    assert "Traceback" in text
    assert ret.status == JobStatus.COMPLETED  # the sweeper will not re-raise it
    assert error_line(KeyError()) == "KeyError"


APP = """
import json, os, time
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg):
    out = Path(HydraConfig.get().runtime.output_dir)
    if cfg.x == cfg.fail_x:
        raise RuntimeError("job asked to fail")
    time.sleep(cfg.sleep)
    summary = {"model": "fake", "decode": "vanilla" if cfg.x == 0 else "tree",
               "data": f"task{cfg.x % 2}", "tau": 1.0 + cfg.x, "tokens_per_s": 10.0 + cfg.x,
               "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    (out / "summary.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
"""

APP_CONFIG = f"""
defaults:
  - override hydra/launcher: gpus
  - _self_
x: 0
fail_x: 4
sleep: 1.5
hydra:
  searchpath: [file://{ROOT / "conf"}]
  job:
    chdir: false
  callbacks:
    record_failures:
      _target_: longspec.callbacks.RecordFailures
    aggregate:
      _target_: longspec.callbacks.AggregateOnMultirunEnd
      plots: false
"""


def test_gpus_launcher_sweep_two_fake_gpus(tmp_path: Path) -> None:
    """5 jobs on 2 fake GPUs: 2 at a time, never sharing a GPU; a failed job is recorded and
    the others finish; the sweep aggregates and exits 1."""
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "app.yaml").write_text(APP_CONFIG)
    (tmp_path / "app.py").write_text(textwrap.dedent(APP))
    sweep = tmp_path / "sweep"
    env = os.environ | {FAKE_GPUS_ENV: "2", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "app.py", "-m", "x=0,1,2,3,4", f"hydra.sweep.dir={sweep}"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr[-3000:]
    infos = [json.loads((sweep / str(i) / "job_info.json").read_text()) for i in range(5)]
    for info in infos:
        assert info["cuda_visible_devices"] in ("0", "1") and info["end"] > info["start"]
        assert info["concurrent_jobs"] <= 2
    overlapping = [
        (a, b) for i, a in enumerate(infos) for b in infos[i + 1 :]
        if a["start"] < b["end"] and b["start"] < a["end"]
    ]  # fmt: skip
    assert overlapping, "the two workers never ran at the same time"
    for a, b in overlapping:
        assert a["cuda_visible_devices"] != b["cuda_visible_devices"]
    assert {i["cuda_visible_devices"] for i in infos} == {"0", "1"}
    for i in range(4):
        summary = json.loads((sweep / str(i) / "summary.json").read_text())
        assert summary["gpu"] == infos[i]["cuda_visible_devices"]
    assert infos[4]["status"] == "FAILED"
    assert (sweep / "4" / "error.txt").read_text().startswith("RuntimeError: job asked to fail")
    md = (sweep / "summary.md").read_text()
    assert "4 finished jobs, 1 failed" in md and "RuntimeError: job asked to fail" in md
    assert "Most jobs running at once: 2." in md


def test_sweep_job_summary_records_its_placement(tmp_path: Path) -> None:
    """run.py on the gpus launcher (one fake GPU): summary.json carries job_info.json
    (CUDA_VISIBLE_DEVICES, card, concurrent jobs, start and end)."""
    sweep = tmp_path / "sweep"
    args = ["model=tiny_llama", "~decode@baseline", "decode=vanilla", "data.num_samples=1"]
    args += ["data.prompt_tokens=32", "generation.max_new_tokens=4", "warmup=false"]
    cmd = [sys.executable, str(ROOT / "run.py"), "-m", "hydra/launcher=gpus", *args]
    cmd += [f"hydra.sweep.dir={sweep}", "+hydra.callbacks.aggregate.plots=false"]
    env = os.environ | {FAKE_GPUS_ENV: "1", "LONGSPEC_CACHE": str(tmp_path / "cache")}
    env |= {"OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads((sweep / "0" / "job_info.json").read_text())
    job = json.loads((sweep / "0" / "summary.json").read_text())["job"]
    assert job == info
    assert job["cuda_visible_devices"] == "0" and job["gpu_ids"] == ["0"]
    assert job["concurrent_jobs"] == 1 and job["status"] == "COMPLETED"
    assert job["end"] >= job["start"]
