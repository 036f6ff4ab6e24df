"""``python -m longspec.bench.e2e`` validates its config before any model loads."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import longspec.bench.common as common
from longspec.bench.e2e import bench, checked_methods
from longspec.config import register

CONF = Path(__file__).resolve().parents[1] / "conf"
TINY = ["model=tiny_llama", "data.prompt_tokens=64", "generation.max_new_tokens=8"]


def bench_cfg(*overrides: str) -> DictConfig:
    register()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("bench", overrides=[*TINY, *overrides])


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> list:
    """Replace the model-loading part of the bench: record calls instead."""
    calls: list = []
    monkeypatch.setattr(common, "run_methods", lambda cfg, methods: calls.append(methods))
    return calls


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["generation.max_new_tokens=0"], "generation.max_new_tokens must be a positive"),
        (["data.prompt_tokens=5000"], "data.prompt_tokens=5000 does not fit"),
        (["device=gpu"], "device=gpu is not one of"),
        (["methods=[vanilla,nosuch]"], "methods: unknown decode method 'nosuch'"),
        (["methods=[tree]"], "reference=vanilla is not one of methods=['tree']"),
    ],
)
def test_bad_bench_config_fails_before_loading(no_model: list, overrides, expected) -> None:
    with pytest.raises(ValueError) as info:
        bench(bench_cfg(*overrides))
    assert expected in str(info.value) and "\n" not in str(info.value)
    assert no_model == []


def test_each_method_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    import longspec.bench.e2e as e2e

    real = e2e.decode_config

    def broken_tree(name: str, cfg: DictConfig) -> DictConfig:
        node = real(name, cfg)
        if name == "tree":
            node.tree_shape = [4, 0]
        return node

    monkeypatch.setattr(e2e, "decode_config", broken_tree)
    with pytest.raises(ValueError, match=r"^methods: tree: decode.tree_shape level 2 is 0"):
        checked_methods(bench_cfg("methods=[vanilla,tree]"))


def test_valid_bench_config_reaches_the_run(no_model: list) -> None:
    cfg = bench_cfg("methods=[vanilla,vanilla_hf]")
    with pytest.raises(TypeError):  # the fake run_methods returns None: nothing to unpack
        bench(cfg)
    ((names_and_cfgs),) = no_model
    assert [name for name, _ in names_and_cfgs] == ["vanilla", "vanilla_hf"]
