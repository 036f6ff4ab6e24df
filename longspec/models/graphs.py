"""CUDA graphs for static-shape steps: capture once per shape, then replay.

A decode step of a small model is hundreds of tiny kernels; launching them one by one from
Python costs far more than running them. A captured graph replays all of them in one
launch. Captured functions must have static shapes and no host synchronisation, and must
be safe to run a few extra times (warm-up) — the steps captured here only write to the
in-flight part of the caches, which every round overwrites anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable

import torch
from torch import Tensor


class GraphCache:
    """Captured graphs keyed by the caller (shapes, buffers), with static inputs/outputs."""

    def __init__(self, warmup: int = 2):
        self.warmup = warmup
        self.graphs: dict[Hashable, tuple[torch.cuda.CUDAGraph, list[Tensor], object]] = {}

    def clear(self) -> None:
        self.graphs.clear()

    def run(
        self,
        key: Hashable,
        fn: Callable[..., object],
        *inputs: Tensor,
        restore: list[Tensor] | None = None,
    ) -> object:
        """fn(*inputs) through a graph captured on first use; outputs are static buffers
        that the next replay overwrites. ``restore``: state tensors that the warm-up runs
        of a capture may change and that must be put back before the first replay."""
        entry = self.graphs.get(key)
        if entry is None:
            saved = [t.clone() for t in restore or []]
            entry = self._capture(fn, inputs)
            for t, s in zip(restore or [], saved, strict=True):
                t.copy_(s)
            self.graphs[key] = entry
        graph, static_in, static_out = entry
        for buf, x in zip(static_in, inputs, strict=True):
            buf.copy_(x)
        graph.replay()
        return static_out

    def _capture(self, fn, inputs):
        static_in = [x.clone() for x in inputs]
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side), torch.inference_mode():
            for _ in range(self.warmup):
                fn(*static_in)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()  # its own memory pool: outputs stay valid per graph
        with torch.cuda.graph(graph), torch.inference_mode():
            static_out = fn(*static_in)
        return graph, static_in, static_out
