"""OmegaConf resolvers used by the configs."""

from __future__ import annotations

from typing import Any

from omegaconf import OmegaConf


def on_device(device: str, gpu_value: Any, cpu_value: Any) -> Any:
    """``${on_device:${device},GPU,CPU}``: the value for the device the run will use."""
    if device == "auto":
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    value = gpu_value if str(device).startswith("cuda") else cpu_value
    if isinstance(value, list | dict):  # a config node, so that resolving a config keeps it
        return OmegaConf.create(value)
    return value


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("on_device"):
        OmegaConf.register_new_resolver("on_device", on_device)
