"""GPU: torch's sdpa backends on the GLIDE draft's self-attention call (SmolLM2 shape).

A draft level attends from its nodes (16 of a [4,16,16,16,16] tree) over the ring of the
last ``window`` tokens plus the pending nodes, under one dense boolean mask; the decode
loop leaves the backend to torch, which picks cuDNN on the H200. This times that call,
replayed from a CUDA graph, with each backend forced (a backend that refuses the call is
noted), for a few node counts.

    python experiments/gpu/sdpa_probe.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from longspec.bench.timing import Timing
from longspec.metrics import environment

HEADS, KV_HEADS, HEAD_DIM = 9, 3, 64  # SmolLM2-135M
RING, PENDING = 512, 69  # draft window, nodes of a [4,16,16,16,16] tree
REPS = 20
BACKENDS = {
    "default": None,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "flash": SDPBackend.FLASH_ATTENTION,
    "math": SDPBackend.MATH,
}


def call_seconds(nodes: int, backend: SDPBackend | None, timing: Timing) -> float:
    """Seconds per draft self-attention call of ``nodes`` queries, graphed."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(1, HEADS, nodes, HEAD_DIM, device="cuda", generator=gen).half()
    keys = RING + PENDING
    k = torch.randn(1, KV_HEADS, keys, HEAD_DIM, device="cuda", generator=gen).half()
    v = torch.randn_like(k)
    mask = torch.rand(1, 1, nodes, keys, device="cuda", generator=gen) < 0.9  # (B, 1, T, S)

    def run():
        if backend is None:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        with sdpa_kernel([backend]):
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)

    from tune_kernel import graphed  # this folder (run as a script)

    return timing.median(graphed(run, REPS)) / REPS


def main(path: str) -> None:
    timing = Timing(torch.device("cuda"), reps=20, warmup=3)
    rows = []
    for nodes in (1, 4, 16, 64):
        for name, backend in BACKENDS.items():
            try:
                us = call_seconds(nodes, backend, timing) * 1e6
            except Exception as err:  # a backend that refuses this call: note it, go on
                rows.append({"nodes": nodes, "backend": name, "error": str(err)[:160]})
                print(f"| {nodes} | {name} | refused |", flush=True)
                continue
            rows.append({"nodes": nodes, "backend": name, "us": us})
            print(f"| {nodes} | {name} | {us:.1f} us |", flush=True)
    result = {"environment": environment(torch.device("cuda")), "ring": RING, "rows": rows}
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sdpa_probe.py OUT.json")
    main(sys.argv[1])
