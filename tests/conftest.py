"""Shared fixtures: tiny random models, the real SmolLM2 (from its GGUF), the conf dir.

Tests marked ``gpu`` are skipped when CUDA is unavailable. Tests marked ``slow`` use the
SmolLM2 model; they run by default (deselect with ``-m "not slow"``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from longspec.loading import load_target

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

# Jobs log to W&B offline by default; the tests' many short jobs skip it (tests that check
# W&B files set WANDB_MODE=offline themselves). Subprocesses inherit this.
os.environ.setdefault("WANDB_MODE", "disabled")

LoadedModel = tuple[PreTrainedModel, PreTrainedTokenizerBase]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


def model_cfg(name: str) -> DictConfig:
    """``conf/model/<name>.yaml`` as an OmegaConf node."""
    return OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")


@pytest.fixture(scope="session")
def conf_dir() -> Path:
    return CONF_DIR


@pytest.fixture(scope="session")
def model_conf() -> Callable[[str], DictConfig]:
    """Factory: name -> that model's config (conf/model/<name>.yaml)."""
    return model_cfg


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Per-session LONGSPEC_CACHE for the tiny models (built fresh every session)."""
    return tmp_path_factory.mktemp("longspec_cache")


def _load_tiny(name: str, cache: Path) -> LoadedModel:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LONGSPEC_CACHE", str(cache))
        return load_target(model_cfg(name).target, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="session")
def tiny_llama(tiny_cache: Path) -> LoadedModel:
    """(model, tokenizer): random 2-layer Llama, float32, CPU."""
    return _load_tiny("tiny_llama", tiny_cache)


@pytest.fixture(scope="session")
def tiny_qwen2(tiny_cache: Path) -> LoadedModel:
    """(model, tokenizer): random 3-layer Qwen2 (q/k/v bias, tied head), float32, CPU."""
    return _load_tiny("tiny_qwen2", tiny_cache)


@pytest.fixture(scope="session")
def smollm2() -> LoadedModel:
    """(model, tokenizer): SmolLM2-135M-Instruct, float32, CPU, via the persistent GGUF cache
    (the first run ever de-quantizes the GGUF, ~35 s; later runs load in about a second)."""
    return load_target(model_cfg("smollm2").target, dtype=torch.float32, device="cpu")


@pytest.fixture(scope="session")
def smollm2_target(smollm2: LoadedModel):
    """The real SmolLM2 wrapped in the project's own forward (sdpa attention)."""
    from longspec.attention import sdpa_attention
    from longspec.models.target import TargetModel

    return TargetModel(smollm2[0], sdpa_attention)


@pytest.fixture(scope="session")
def pycode_prompts(smollm2: LoadedModel) -> list[list[int]]:
    """Token ids of three 1200-token pycode prompts (eval split) for SmolLM2."""
    from longspec.data.pycode import PyCodeDataset

    data = PyCodeDataset(split="eval", prompt_tokens=1200, num_samples=3, seed=0)
    return [s.prompt_ids for s in data.load(smollm2[1], "raw")]
