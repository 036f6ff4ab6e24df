"""Where the target's weights go: one device, or split layer by layer over the job's GPUs.

With ``resources.gpus_per_job`` > 1 the target loads with ``device_map="auto"`` over the GPUs
the job sees (``CUDA_VISIBLE_DEVICES``, set by ``hydra/launcher=gpus``): transformers spreads
the layers evenly, each capped by ``max_memory`` so that every GPU keeps room for its layers'
KV cache. Nothing may go to the CPU or disk (the project's forward runs each layer on its own
GPU; see ``models/target.py``), so a model that does not fit is an error before loading.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

# Share of each GPU's memory the weights may take; the rest holds the KV cache of its layers
# and the activations.
WEIGHTS_SHARE = 0.8
GIB = 1 << 30


def split_kwargs(
    gpus: int, device: torch.device, totals: Sequence[int] | None = None
) -> dict[str, Any]:
    """``from_pretrained`` placement arguments: {} for one device (loaded, then moved);
    above one GPU ``device_map="auto"`` with ``max_memory`` over GPUs 0 .. gpus - 1.

    ``totals``: each visible GPU's memory in bytes (default: asked from CUDA).
    """
    if gpus <= 1:
        return {}
    if device.type != "cuda":
        raise ValueError(f"resources.gpus_per_job={gpus} needs CUDA GPUs, not device {device}")
    if totals is None:
        count = torch.cuda.device_count()
        totals = [torch.cuda.get_device_properties(i).total_memory for i in range(count)]
    if len(totals) < gpus:
        raise ValueError(f"resources.gpus_per_job={gpus} but {len(totals)} GPU(s) are visible")
    max_memory = {i: int(totals[i] * WEIGHTS_SHARE) for i in range(gpus)}
    return {"device_map": "auto", "max_memory": max_memory}


def weights_bytes(config: Any, dtype: torch.dtype, trust_remote_code: bool = False) -> int:
    """Bytes of the model's parameters in ``dtype``, from its config (built on the meta
    device: no memory, no weights read)."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, trust_remote_code=trust_remote_code
        )
    return sum(p.numel() for p in model.parameters()) * dtype.itemsize


def check_fits(weights: int, max_memory: Mapping[Any, int]) -> None:
    """ValueError when the weights exceed the GPUs' weight budget (before loading)."""
    budget = sum(max_memory.values())
    if weights > budget:
        raise ValueError(
            f"the target's weights ({weights / GIB:.1f} GiB) do not fit in "
            f"{len(max_memory)} GPU(s) ({budget / GIB:.1f} GiB for weights, "
            f"{WEIGHTS_SHARE:.0%} of each); raise resources.gpus_per_job or use a smaller dtype"
        )


def check_device_map(device_map: Mapping[str, Any]) -> None:
    """ValueError when a part of the model was placed off the GPUs (cpu, disk)."""
    off = sorted({f"{name} on {dev}" for name, dev in device_map.items() if not _on_gpu(dev)})
    if off:
        raise ValueError(
            f"the target does not fit on the job's GPUs ({', '.join(off[:3])}); raise "
            "resources.gpus_per_job"
        )


def _on_gpu(device: Any) -> bool:
    """GPU index or ``cuda[:N]`` (not ``cpu``, ``disk``, ``meta``)."""
    if isinstance(device, int) and not isinstance(device, bool):
        return True
    return str(device).startswith("cuda")
