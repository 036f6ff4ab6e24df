"""Timers that synchronise the device, and the summary numbers of a run."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so host clocks measure it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PhaseTimer:
    """Accumulates wall time per named phase, synchronising the device around each."""

    def __init__(self, device: torch.device | str, enabled: bool = True):
        self.device = torch.device(device)
        self.enabled = enabled
        self.seconds: dict[str, float] = defaultdict(float)

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] += time.perf_counter() - start

    def total(self, *names: str) -> float:
        return sum(self.seconds.get(n, 0.0) for n in names)

    def decode_seconds(self) -> float:
        """Everything but prefill."""
        return sum(v for k, v in self.seconds.items() if k != "prefill")


def summarize(records: list[dict], strategy: Any = None) -> dict:
    """Totals of a run's per-sample records (the summary.json contract)."""
    batches = {r["batch"]: r for r in records}.values()  # decode time is per batch
    decode_s = sum(r["decode_s"] for r in batches)
    prefill_s = sum(r["prefill_s"] for r in batches)
    new_tokens = sum(r["new_tokens"] for r in records)
    forwards = sum(r["target_forwards"] for r in records)
    hist: dict[int, int] = defaultdict(int)
    for r in records:
        for n in r.get("accept_lengths", []):
            hist[n] += 1
    phases: dict[str, float] = defaultdict(float)
    for r in batches:
        for k, v in r.get("phase_s", {}).items():
            phases[k] += v
    out = {
        "n_samples": len(records),
        "new_tokens": new_tokens,
        "target_forwards": forwards,
        "tau": new_tokens / forwards if forwards else 0.0,
        "tokens_per_s": new_tokens / decode_s if decode_s > 0 else 0.0,
        "end_to_end_tokens_per_s": new_tokens / (decode_s + prefill_s) if decode_s else 0.0,
        "decode_s": decode_s,
        "prefill_s": prefill_s,
        "phase_s": dict(phases),
        "accept_length_hist": dict(sorted(hist.items())),
        "peak_memory_bytes": max((r["peak_memory_bytes"] for r in records), default=0),
    }
    dcache = getattr(strategy, "dcache", None)
    if dcache is not None:
        out["draft_cache_bytes"] = dcache.nbytes
    return out | strategy_fields(strategy)


def strategy_fields(strategy: Any) -> dict:
    """What a strategy chose at run time (e.g. ``tree_auto``: the tuned tree shapes)."""
    describe = getattr(strategy, "describe", None)
    return describe() if describe is not None else {}


def environment(device: torch.device) -> dict:
    """Device and library versions for the summary."""
    import platform

    import transformers

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "device": str(device),
        "device_name": name or platform.machine(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }
