"""Every experiment config composes and dry-runs; launcher configs compose (no weights)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.types import RunMode
from omegaconf import OmegaConf

from longspec.config import register
from longspec.dryrun import compose_jobs, list_jobs, main

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
PAPER_MODELS = {"vicuna7b", "vicuna13b", "longchat7b", "longchat13b", "llama8b"}
PAPER_TASKS = {"gov_report", "qmsum", "multi_news", "lcc", "repobench-p"}
JOB_COUNTS = {
    "paper_longbench": 5 * 5 * 4,
    "paper_aime24": 2,
    "ablation_tree_shapes": 2 * 7,
    "ablation_gamma": 2 * 7,
    "ablation_attention": 2 * 2 * 2,
    "smollm2_pycode": 3,
}


def compose_cfg(*overrides: str, hydra: bool = True) -> OmegaConf:
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def test_every_experiment_is_listed() -> None:
    assert set(EXPERIMENTS) == set(JOB_COUNTS)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_as_a_sweep(name: str) -> None:
    cfg = compose_cfg(f"+experiment={name}")
    assert cfg.hydra.mode == RunMode.MULTIRUN
    assert cfg.hydra.sweeper.params
    assert str(cfg.hydra.sweep.dir).startswith(f"multirun/{name}/")
    job = compose_cfg(f"+experiment={name}", hydra=False)
    OmegaConf.to_container(job, resolve=True)  # every interpolation resolves
    for group in ("model", "decode", "data", "attention", "logger"):
        assert "_target_" in job[group] or group == "model"


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_dryrun_lists_the_jobs_and_they_compose(name: str) -> None:
    jobs = list_jobs([f"+experiment={name}"])
    assert len(jobs) == JOB_COUNTS[name]
    assert len({tuple(j) for j in jobs}) == len(jobs)
    configs = compose_jobs([jobs[0], jobs[-1]])
    assert configs[0] != configs[-1]


def test_paper_longbench_grid() -> None:
    jobs = list_jobs(["+experiment=paper_longbench"])
    settings = [dict(o.split("=", 1) for o in job if not o.startswith("+")) for job in jobs]
    assert {s["model"] for s in settings} == PAPER_MODELS
    assert {s["data.task"] for s in settings} == PAPER_TASKS
    assert {s["decode"] for s in settings} == {"vanilla_hf", "vanilla", "magicdec", "tree"}
    last = compose_jobs([jobs[-1]])[0]
    assert last.model.name == "llama8b" and last.data.task == "repobench-p"
    assert last.generation.max_new_tokens == 1024 and last.generation.temperature == 0.0
    assert last.data._target_.endswith("LongBenchDataset")


def test_experiment_settings() -> None:
    aime = compose_cfg("+experiment=paper_aime24", hydra=False)
    assert aime.model.name == "qwq" and aime.generation.max_new_tokens == 20000
    assert aime.data.first_id == 60 and aime.data.last_id == 89
    cpu = compose_cfg("+experiment=smollm2_pycode", hydra=False)
    assert cpu.model.name == "smollm2" and cpu.generation.max_new_tokens == 64
    assert cpu.data.num_samples == 2 and cpu.data.prompt_tokens == 1024
    for name in ("ablation_gamma", "ablation_tree_shapes"):
        cfg = compose_cfg(f"+experiment={name}", hydra=False)
        assert cfg.baseline._target_.endswith("Vanilla")
    attention = [tuple(j) for j in list_jobs(["+experiment=ablation_attention"])]
    assert {o for j in attention for o in j if o.startswith("attention=")} == {
        "attention=hybrid",
        "attention=sdpa",
    }


def test_dryrun_adds_command_line_sweeps(capsys: pytest.CaptureFixture[str]) -> None:
    jobs = list_jobs(["+experiment=smollm2_pycode", "seed=0,1", "data.num_samples=1"])
    assert len(jobs) == 6 and all("data.num_samples=1" in j for j in jobs)
    assert main(["+experiment=paper_aime24", "--compose"]) == 0
    out = capsys.readouterr().out
    assert "2 jobs" in out and "decode=vanilla" in out and "all 2 job configs compose" in out


def test_cfg_job_prints_without_weights() -> None:
    env = os.environ | {"HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "run.py", "+experiment=paper_longbench", "--cfg", "job"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "max_new_tokens: 1024" in proc.stdout and "name: vicuna7b" in proc.stdout


def test_gpus_launcher_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGSPEC_FAKE_GPUS", "4")
    cfg = compose_cfg("hydra/launcher=gpus")
    assert cfg.hydra.launcher._target_.endswith("JoblibLauncher")
    assert cfg.hydra.launcher.n_jobs == 4
    assert cfg.hydra.callbacks.gpu_lock._target_ == "longspec.gpu_lock.GpuLock"
    two = compose_cfg("hydra/launcher=gpus", "hydra.callbacks.gpu_lock.gpus_per_job=2")
    assert two.hydra.launcher.n_jobs == 2
    assert list(cfg.hydra.callbacks) == ["gpu_lock", "record_failures", "aggregate"]


def test_slurm_launcher_config(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    monkeypatch.setenv("SLURM_PARTITION", "gpu-long")
    cfg = compose_cfg("hydra/launcher=slurm", "+experiment=paper_longbench")
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu-long" and launcher.account is None
    assert launcher.gpus_per_node == 1 and launcher.nodes == 1 and launcher.timeout_min == 240
    assert str(launcher.submitit_folder).startswith("multirun/paper_longbench/")
