"""Median latency of a device operation: CUDA events on a GPU, wall clock on the CPU."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from longspec.metrics import synchronize


@dataclass(frozen=True)
class Timing:
    """Runs ``warmup`` untimed calls, then reports the median of ``reps`` timed ones."""

    device: torch.device
    reps: int = 10
    warmup: int = 3

    def median(self, fn: Callable[[], object], before: Callable[[], object] | None = None) -> float:
        """Median seconds of fn(); ``before()`` runs untimed ahead of every call."""
        for _ in range(self.warmup):
            if before is not None:
                before()
            fn()
        times = []
        for _ in range(max(self.reps, 1)):
            if before is not None:
                before()
            times.append(self._once(fn))
        return statistics.median(times)

    def medians(self, fns: list[Callable[[], object]]) -> list[float]:
        """Median seconds of each fn, timed in turns (fn 1, fn 2, ..., fn 1, ...), so that a
        slow spell of a shared machine spreads over all of them instead of hitting one."""
        for _ in range(self.warmup):
            for fn in fns:
                fn()
        times: list[list[float]] = [[] for _ in fns]
        for _ in range(max(self.reps, 1)):
            for fn, out in zip(fns, times, strict=True):
                out.append(self._once(fn))
        return [statistics.median(t) for t in times]

    def _once(self, fn: Callable[[], object]) -> float:
        synchronize(self.device)  # start from an idle device: nothing queued ahead of fn
        if self.device.type != "cuda":
            start = time.perf_counter()
            fn()
            return time.perf_counter() - start
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3  # ms -> s


def copy_bandwidth(timing: Timing, megabytes: int) -> float:
    """Device copy bandwidth in GB/s: a ``megabytes`` tensor copied (read + write) by copy_."""
    n = megabytes * 2**20 // 2
    src = torch.empty(n, dtype=torch.float16, device=timing.device).normal_()
    dst = torch.empty_like(src)
    seconds = timing.median(lambda: dst.copy_(src))
    return 2 * src.nbytes / seconds / 1e9  # bytes read + bytes written
