"""W&B tracking: offline runs inside the job dir, secrets stripped, failures never fatal."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from omegaconf import OmegaConf

from longspec.redact import REDACTED, redact
from longspec.tracking import (
    NoLogger,
    WandbLogger,
    resolve_mode,
    run_name,
    sample_row,
    summary_metrics,
    where_line,
)

ROOT = Path(__file__).resolve().parents[1]
SECRET = "hf_" + "a1B2c3D4" * 5
WANDB_KEY = "0123456789abcdef" * 2 + "01234567"

CONFIG = {
    "model": {"name": "tiny_llama", "pad_token_id": 0, "hub_token": SECRET},
    "generation": {"max_new_tokens": 8},
    "data": {"prompt_tokens": 64, "min_prompt_tokens": 1200, "note": f"made with {SECRET}"},
    "api_key": "abc",
    "wandb_note": WANDB_KEY,
    "decode": {"tree_shape": [4, 16]},
}
NAMES = {"model": "tiny_llama", "decode": "tree", "data": "pycode"}
RECORDS = [
    {"id": "a", "new_tokens": 8, "target_forwards": 4, "tau": 2.0, "tokens_per_s": 40.0,
     "prefill_s": 0.1, "decode_s": 0.2, "text": "x" * 5000, "accept_lengths": [1, 2, 3, 2]},
    {"id": 7, "new_tokens": 8, "target_forwards": 8, "tau": 1.0, "tokens_per_s": 20.0,
     "prefill_s": 0.1, "decode_s": 0.4, "text": "y", "accept_lengths": [1] * 8},
]  # fmt: skip
SUMMARY = {"tau": 1.5, "tokens_per_s": 27.0, "speedup": 1.8, "peak_memory_bytes": 123,
           "baseline": {"tokens_per_s": 15.0}, "config": CONFIG}  # fmt: skip


# ------------------------------------------------------------------------------- secrets


def test_redact_strips_secret_keys_token_values_and_env_values() -> None:
    out = redact(CONFIG, secrets=[WANDB_KEY])
    assert out["model"]["hub_token"] == REDACTED
    assert out["api_key"] == REDACTED
    assert out["data"]["note"] == f"made with {REDACTED}"
    assert out["wandb_note"] == REDACTED
    text = str(out)
    assert SECRET not in text and WANDB_KEY not in text


def test_redact_keeps_ordinary_fields() -> None:
    out = redact(CONFIG, secrets=[])
    assert out["generation"]["max_new_tokens"] == 8
    assert out["data"]["prompt_tokens"] == 64
    assert out["data"]["min_prompt_tokens"] == 1200
    assert out["model"]["pad_token_id"] == 0
    assert out["decode"]["tree_shape"] == [4, 16]


def test_redact_reads_secret_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    monkeypatch.setenv("HF_TOKEN", "plainvalue-42")
    out = redact({"a": f"x{WANDB_KEY}y", "b": ["plainvalue-42"]})
    assert out == {"a": f"x{REDACTED}y", "b": [REDACTED]}


@pytest.mark.parametrize(
    ("configured", "env", "expected"),
    [
        ("offline", {}, "offline"),
        (None, {}, "offline"),
        ("offline", {"WANDB_API_KEY": "k"}, "online"),
        ("offline", {"WANDB_MODE": "disabled", "WANDB_API_KEY": "k"}, "disabled"),
        ("online", {}, "online"),
    ],
)
def test_resolve_mode(configured: str | None, env: dict, expected: str) -> None:
    assert resolve_mode(configured, env) == expected


def test_run_name_from_overrides_or_choices() -> None:
    hydra_cfg = OmegaConf.create({"overrides": {"task": ["model=tiny_llama", "decode=seq"]}})
    assert run_name(hydra_cfg, NAMES) == "model=tiny_llama,decode=seq"
    assert run_name(None, NAMES) == "tiny_llama-tree-pycode"


def test_sample_row_and_summary_metrics() -> None:
    row = sample_row(RECORDS[1])
    assert row[0] == "7" and len(sample_row(RECORDS[0])[-1]) == 2000
    metrics = summary_metrics(SUMMARY)
    assert metrics["speedup"] == 1.8 and metrics["baseline_tokens_per_s"] == 15.0
    assert "config" not in metrics


# ------------------------------------------------------------------- fake wandb: contract


class FakeRun:
    def __init__(self, fail_log: bool = False):
        self.logged: list[dict] = []
        self.summary: dict[str, Any] = {}
        self.exit_code: int | None = None
        self.fail_log = fail_log

    def log(self, payload: dict) -> None:
        if self.fail_log:
            raise RuntimeError("log broke")
        self.logged.append(payload)

    def finish(self, exit_code: int = 0) -> None:
        self.exit_code = exit_code


class FakeTable:
    def __init__(self, columns: list[str], data: list | None = None):
        self.columns = columns
        self.data = list(data or [])

    def add_data(self, *row: Any) -> None:
        self.data.append(list(row))


def fake_wandb(run: FakeRun, init_error: Exception | None = None) -> SimpleNamespace:
    """A stand-in for the wandb module: records init kwargs, returns ``run``."""
    calls: list[dict] = []

    def init(**kwargs: Any) -> FakeRun:
        calls.append(kwargs)
        if init_error is not None:
            raise init_error
        return run

    return SimpleNamespace(init=init, calls=calls, Table=FakeTable, Histogram=list)


def run_job(tracker: Any, job_dir: Path, failed: bool = False) -> None:
    tracker.start(CONFIG, NAMES, job_dir)
    for record in RECORDS:
        tracker.log_sample(record)
    tracker.finish(None if failed else SUMMARY, failed=failed)


def test_wandb_logger_contract(tmp_path: Path) -> None:
    run = FakeRun()
    wb = fake_wandb(run)
    tracker = WandbLogger(project="p", group="g", tags=["t"], importer=lambda: wb)
    run_job(tracker, tmp_path)
    (kwargs,) = wb.calls
    assert kwargs["dir"] == str(tmp_path) and kwargs["mode"] in ("offline", "online", "disabled")
    assert kwargs["group"] == "g" and kwargs["job_type"] == "tree" and kwargs["tags"] == ["t"]
    assert kwargs["config"]["model"]["hub_token"] == REDACTED
    assert kwargs["config"]["choices"]["decode"] == "tree"
    assert kwargs["settings"] == {"quiet": True}  # W&B's closing block stays off the console
    samples = [p for p in run.logged if "sample/tau" in p]
    assert [p["sample/tau"] for p in samples] == [2.0, 1.0]
    final = run.logged[-1]
    assert len(final["samples"].data) == 2
    assert sorted(final["accept_length_hist"]) == sorted([1, 2, 3, 2] + [1] * 8)
    assert final["accept_length_counts"].data == [[1, 9], [2, 2], [3, 1]]
    assert run.summary["tau"] == 1.5 and run.summary["speedup"] == 1.8
    assert run.exit_code == 0


def test_wandb_console_output_can_be_kept(tmp_path: Path) -> None:
    wb = fake_wandb(FakeRun())
    run_job(WandbLogger(quiet=False, importer=lambda: wb), tmp_path)
    assert wb.calls[0]["settings"] == {}


def test_where_line_names_the_url_or_the_offline_dir() -> None:
    online = SimpleNamespace(url="https://wandb.ai/u/p/runs/x", settings=SimpleNamespace(
        mode="online", sync_dir="/j/wandb/run-x"))  # fmt: skip
    offline = SimpleNamespace(url=None, settings=SimpleNamespace(
        mode="offline", sync_dir="/j/wandb/offline-run-x"))  # fmt: skip
    assert where_line(online) == "W&B run: https://wandb.ai/u/p/runs/x"
    run_dir = "/j/wandb/offline-run-x"
    assert where_line(offline) == f"W&B offline run: {run_dir} (upload: wandb sync {run_dir})"
    assert where_line(FakeRun()) is None
    disabled = SimpleNamespace(url=None, settings=SimpleNamespace(
        mode="disabled", sync_dir="/tmp/wandb/run-x"))  # fmt: skip
    assert where_line(disabled) is None  # W&B off: no run dir to name
    shared = SimpleNamespace(url="https://wandb.ai/u/p/runs/y", settings=SimpleNamespace(
        mode="shared", sync_dir="/j/wandb/run-y"))  # fmt: skip
    assert where_line(shared) == "W&B run: https://wandb.ai/u/p/runs/y"


def test_wandb_logger_failed_job_finishes_with_exit_code_1(tmp_path: Path) -> None:
    run = FakeRun()
    run_job(WandbLogger(importer=lambda: fake_wandb(run)), tmp_path, failed=True)
    assert run.exit_code == 1


def test_wandb_log_error_still_finishes(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    run = FakeRun(fail_log=True)
    with caplog.at_level(logging.WARNING):
        run_job(WandbLogger(importer=lambda: fake_wandb(run)), tmp_path)
    assert run.exit_code == 0
    assert "W&B log failed" in caplog.text


@pytest.mark.parametrize("error", [ImportError("no wandb"), RuntimeError("init broke")])
def test_wandb_failure_only_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, error: Exception
) -> None:
    def importer() -> Any:
        if isinstance(error, ImportError):
            raise error
        return fake_wandb(FakeRun(), init_error=error)

    tracker = WandbLogger(importer=importer)
    with caplog.at_level(logging.WARNING):
        run_job(tracker, tmp_path)
    assert not tracker.active
    assert str(error) in caplog.text


def test_no_logger_is_a_tracker(tmp_path: Path) -> None:
    """The tracker contract, and nothing written: results files are the runner's."""
    run_job(NoLogger(), tmp_path)
    run_job(NoLogger(), tmp_path / "failed", failed=True)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ real wandb, offline


@pytest.fixture
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)
    return tmp_path / "job"


def read_when_flushed(path: Path, timeout_s: float = 10.0) -> bytes:
    """The run file's bytes once wandb-core has written the run (it closes asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while b"max_new_tokens" not in (data := path.read_bytes()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return data


def test_offline_run_lands_in_job_dir_without_secrets(
    offline_env: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("wandb")
    tracker = WandbLogger(project="longspec-test")
    with caplog.at_level(logging.INFO, logger="longspec.tracking"):
        run_job(tracker, offline_env)
    runs = list((offline_env / "wandb").glob("offline-run-*"))
    assert len(runs) == 1, list(offline_env.rglob("*"))
    assert f"W&B offline run: {runs[0]} (upload: wandb sync {runs[0]})" in caplog.text
    (blob,) = runs[0].glob("run-*.wandb")
    data = read_when_flushed(blob)
    assert b"max_new_tokens" in data and REDACTED.encode() in data
    assert SECRET.encode() not in data and WANDB_KEY.encode() not in data
    assert list(runs[0].rglob("samples_*.table.json"))
    assert not (offline_env.parent / "elsewhere" / "wandb").exists()


# ------------------------------------------------------------------ through the real runner


def run_tiny_job(job_dir: Path, monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    """``python run.py model=tiny_llama logger=wandb ...`` in-process, job dir = cwd."""
    from hydra import compose, initialize_config_dir

    from longspec.config import register
    from longspec.runner import run

    register()
    overrides = ["model=tiny_llama", "decode=vanilla", "data=pycode", "data.num_samples=2",
                 "data.prompt_tokens=48", "generation.max_new_tokens=4", "logger=wandb",
                 "logger.tags=[test]", "warmup=false", "device=cpu"]  # fmt: skip
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    job_dir.mkdir(parents=True)
    monkeypatch.chdir(job_dir)
    monkeypatch.setenv("LONGSPEC_CACHE", str(cache))
    assert run(cfg) == 0


def test_runner_with_wandb_offline(offline_env: Path, monkeypatch: pytest.MonkeyPatch,
                                   tiny_cache: Path) -> None:  # fmt: skip
    pytest.importorskip("wandb")
    run_tiny_job(offline_env, monkeypatch, tiny_cache)
    assert len((offline_env / "results.jsonl").read_text().splitlines()) == 2
    (blob,) = offline_env.glob("wandb/offline-run-*/run-*.wandb")
    data = read_when_flushed(blob)
    assert b"tiny_llama" in data and WANDB_KEY.encode() not in data


def test_runner_results_survive_broken_wandb_init(
    offline_env: Path, monkeypatch: pytest.MonkeyPatch, tiny_cache: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    wandb = pytest.importorskip("wandb")

    def broken_init(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("wandb.init is broken")

    monkeypatch.setattr(wandb, "init", broken_init)
    with caplog.at_level(logging.WARNING):
        run_tiny_job(offline_env, monkeypatch, tiny_cache)
    assert "wandb.init is broken" in caplog.text
    assert len((offline_env / "results.jsonl").read_text().splitlines()) == 2
    summary = json.loads((offline_env / "summary.json").read_text())
    assert summary["n_samples"] == 2 and summary["model"] == "tiny_llama"
    assert not (offline_env / "wandb").exists()


def test_runner_logs_the_baseline_speedup_to_wandb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_cache: Path
) -> None:
    """A job with a baseline (decode@baseline=vanilla): the W&B run summary gets the
    speedup and the baseline's tokens/s that summary.json holds."""
    from hydra import compose, initialize_config_dir

    import longspec.runner as runner
    from longspec.config import register

    run = FakeRun()
    real_build = runner.build

    def build(node: Any) -> Any:
        if str(node.get("_target_", "")).endswith("WandbLogger"):
            return WandbLogger(importer=lambda: fake_wandb(run))
        return real_build(node)

    monkeypatch.setattr(runner, "build", build)
    register()
    overrides = ["model=tiny_llama", "decode=vanilla", "decode@baseline=vanilla", "data=pycode",
                 "data.num_samples=1", "data.prompt_tokens=48", "generation.max_new_tokens=4",
                 "logger=wandb", "warmup=false", "device=cpu"]  # fmt: skip
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LONGSPEC_CACHE", str(tiny_cache))
    assert runner.run(cfg) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert run.summary["speedup"] == summary["speedup"] > 0
    assert run.summary["baseline_tokens_per_s"] == summary["baseline"]["tokens_per_s"]
    assert run.exit_code == 0
