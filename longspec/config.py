"""Structured config schema (validated by Hydra/OmegaConf) and value checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore


@dataclass
class GenerationConfig:
    max_new_tokens: int = 128
    temperature: float = 0.0
    top_p: float = 1.0


@dataclass
class ResourcesConfig:
    """What one job needs from the node.

    ``gpus_per_job``: GPUs locked per job by ``hydra/launcher=gpus``; above 1 the target is
    split over them layer by layer (``device_map="auto"``, see ``longspec.placement``).
    """

    gpus_per_job: int = 1


@dataclass
class RunConfig:
    """Top-level settings; the groups (model, decode, data, attention, logger) are free-form
    dicts with a ``_target_`` where a component is swappable."""

    model: Any = None
    decode: Any = None
    data: Any = None
    attention: Any = None
    logger: Any = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    batch_size: int = 1
    warmup: bool = True
    baseline: Any = None  # a decode config to time on the same prompts (speedup), or null
    resume: bool = False
    trust_remote_code: bool = False


@dataclass
class BenchConfig(RunConfig):
    """``conf/bench.yaml``: several decode methods on the same prompts."""

    methods: list[str] = field(default_factory=lambda: ["vanilla", "tree"])
    reference: str = "vanilla"
    out: str | None = None
    label: str = ""


def register() -> None:
    from longspec.resolvers import register_resolvers

    register_resolvers()
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    store.store(name="bench_schema", node=BenchConfig)
