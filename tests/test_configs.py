"""Every config group composes, and its component instantiates."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from longspec.config import register

CONF = Path(__file__).resolve().parent.parent / "conf"
register()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


@pytest.mark.parametrize("name", options("model"))
def test_model_configs_compose(name):
    cfg = compose_with(f"model={name}")
    assert cfg.model.name == name and cfg.model.context > 0
    assert cfg.model.prompt_format in {"raw", "chat", "vicuna"}


@pytest.mark.parametrize("name", options("decode"))
def test_decode_configs_instantiate(name, tiny_llama):
    from longspec.build import build_strategy
    from longspec.models.target import TargetModel

    cfg = compose_with(f"decode={name}", "model=tiny_llama")
    target = TargetModel(tiny_llama[0], instantiate(cfg.attention))
    strategy = build_strategy(cfg.decode, target, cfg)
    assert callable(strategy.generate)


@pytest.mark.parametrize("name", options("attention"))
def test_attention_configs_instantiate(name):
    cfg = compose_with(f"attention={name}")
    assert callable(instantiate(cfg.attention))


@pytest.mark.parametrize("name", options("logger"))
def test_logger_configs_instantiate(name, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose_with(f"logger={name}")
    tracker = instantiate(cfg.logger)
    assert hasattr(tracker, "start") and hasattr(tracker, "finish")


def test_default_job_logs_to_wandb_offline():
    """Issue 4: the default job keeps an offline W&B run beside its results."""
    cfg = compose_with()
    assert cfg.logger._target_ == "longspec.tracking.WandbLogger" and cfg.logger.mode == "offline"


def test_schema_rejects_wrong_types():
    with pytest.raises(Exception, match="max_new_tokens"):
        compose_with("generation.max_new_tokens=many")


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_device_dependent_values_resolve(device):
    """``${on_device:...}`` values (lists too) survive a full resolve (``--cfg job
    --resolve``) and pick the device's value."""
    from omegaconf import OmegaConf

    cfg = compose_with("decode=tree", f"device={device}")
    text = OmegaConf.to_yaml(cfg, resolve=True)
    shape = [1, 1, 1] if device == "cpu" else [4, 16, 16, 16, 16]
    assert (
        list(cfg.decode.tree_shape) == shape
        and f"calib_tokens: {192 if device == 'cpu' else 256}" in text
    )
