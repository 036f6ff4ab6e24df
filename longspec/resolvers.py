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


def gpu_slots(gpus_per_job: int | str = 1) -> int:
    """``${longspec.gpu_slots:K}``: how many jobs of K GPUs each fit this node (1 without
    GPUs); the launcher's worker count."""
    from longspec.gpu_lock import num_slots  # nvidia-smi and locks: only when resolved

    return num_slots(gpus_per_job)


def register_resolvers() -> None:
    """The resolvers the configs use (run.py, train.py and the benches call this first)."""
    if not OmegaConf.has_resolver("on_device"):
        OmegaConf.register_new_resolver("on_device", on_device)
    if not OmegaConf.has_resolver("longspec.gpu_slots"):
        OmegaConf.register_new_resolver("longspec.gpu_slots", gpu_slots)
