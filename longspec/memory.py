"""Memory figures for messages and records: what did not fit when the GPU ran out of memory,
the size of the target's KV cache, a card's free memory, and a run's peak memory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from longspec.data.sample import Sample
    from longspec.decoding.sampling import Generation
    from longspec.models.target import TargetModel

GIB = 1 << 30


def oom_message(
    target: TargetModel, strategy: Any, batch: list[Sample], gen: Generation, what: str = ""
) -> str:
    """What did not fit (prompt, batch, new tokens, KV cache bytes) and what to lower."""
    longest = max(len(s.prompt_ids) for s in batch)
    nodes = int(getattr(strategy, "max_nodes", 0) or 0)
    capacity = longest + gen.max_new_tokens + nodes + 2
    sizes = f"prompt {longest} tokens, batch {len(batch)}, max_new_tokens {gen.max_new_tokens}" + (
        f", {nodes} draft nodes per round" if nodes else ""
    )
    cache = kv_cache_bytes(target, len(batch), capacity)
    if cache is not None:
        sizes += f"; target KV cache {cache / GIB:.2f} GiB for {capacity} positions"
    return (
        f"{what}GPU out of memory on sample {batch[0].id} ({sizes}){device_memory(target.device)}; "
        "lower generation.max_new_tokens, batch_size, the prompt length (data.prompt_tokens, "
        "or a shorter prompt set) or the tree (decode.tree_shape / decode.gamma)"
    )


def kv_cache_bytes(target: TargetModel, batch: int, capacity: int) -> int | None:
    """Bytes of the target's keys and values for ``batch`` rows of ``capacity`` positions."""
    try:
        elem = torch.empty((), dtype=target.dtype).element_size()
        per_position = 2 * target.n_layers * target.n_kv_heads * target.head_dim * elem
    except (AttributeError, TypeError):
        return None
    return per_position * batch * capacity


def device_memory(device: torch.device) -> str:
    """`` on a 79.1 GiB card with 1.2 GiB free`` (empty off CUDA or on failure)."""
    if device.type != "cuda":
        return ""
    try:
        free, total = torch.cuda.mem_get_info(device)
    except RuntimeError:
        return ""
    return f" on a {total / GIB:.1f} GiB card with {free / GIB:.1f} GiB free"


def peak_memory(device: torch.device) -> int:
    """Peak bytes of the run: allocated on a CUDA device, else the process's max RSS."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
