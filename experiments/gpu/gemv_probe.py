"""GPU: the one-row projection kernel (longspec.models.gemv) against cuBLAS, then the
vanilla decode step of the Llama-3-8B shape with and without it.

1. Per projection of a layer (q|k|v and gate|up from the RMSNorm of the residual row, o
   plus residual, down from [gate | up] plus residual), each launch setting: microseconds
   per call, from a CUDA graph of 32 calls over 32 different weights (so L2 holds none of
   them), against cuBLAS with the kernel it needs beside it (add_rms_norm, silu_mul, an
   add) captured the same way, and the weight-read floor.
2. The graphed vanilla step (random weights, float16) at the given contexts with the
   kernel on and off, timed in turns; memory floor = weights + cache / copy bandwidth.
   Then, with the kernel on, the split-KV attention's program target
   (``split_kernel.TARGET_PROGRAMS``, how many programs a launch aims for) at each value.

    python experiments/gpu/gemv_probe.py OUT.json [contexts=8192,32768] [sweep=1]
        [programs=264,396,512]
"""

from __future__ import annotations

import itertools
import json
import sys

import torch

from longspec.attention import split_kernel
from longspec.bench.scale_setup import kv_bytes, long_context, one_round
from longspec.bench.timing import Timing, copy_bandwidth
from longspec.metrics import environment
from longspec.models.fused_kernels import add_rms_norm, silu_mul
from longspec.models.gemv import GEMV_LAUNCH, WIDE_LAUNCH, GemvLaunch, RowNorm, gemv
from longspec.models.glide_io import random_glide
from longspec.models.random_weights import random_model, shape_config, weight_bytes

COPIES = 32
# name: (outputs, inputs, input kind): the Llama-3-8B projections of one layer
SHAPES = {
    "qkv": (6144, 4096, "norm"),
    "o": (4096, 4096, "residual"),
    "gate_up": (28672, 4096, "norm"),
    "down": (4096, 14336, "silu"),
}


def graph_seconds(fn, timing: Timing) -> float:
    """Seconds per call of fn(i) for i < COPIES, replayed from one CUDA graph."""
    for i in range(COPIES):
        fn(i)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(COPIES):
            fn(i)
    return timing.median(graph.replay) / COPIES


def sweep(timing: Timing, bandwidth: float) -> list[dict]:
    rows = []
    for name, (n_out, n_in, kind) in SHAPES.items():
        w = torch.randn(COPIES, n_out, n_in, device="cuda", dtype=torch.float16) * 0.02
        x = torch.randn(1, 1, 2 * n_in if kind == "silu" else n_in, device="cuda").half()
        res = torch.randn(1, 1, n_out, device="cuda", dtype=torch.float16)
        norm = RowNorm(torch.rand(n_in, device="cuda", dtype=torch.float16) + 0.5, 1e-5)
        floor = n_out * n_in * 2 / bandwidth

        def cublas(i, w=w, x=x, res=res, kind=kind, norm=norm):
            if kind == "norm":
                return torch.nn.functional.linear(add_rms_norm(x, None, norm.weight, 1e-5)[1], w[i])
            inp = silu_mul(x) if kind == "silu" else x
            return res + torch.nn.functional.linear(inp, w[i])

        rows.append({"proj": name, "launch": "cublas", "us": graph_seconds(cublas, timing) * 1e6})
        grid = itertools.product([4, 8, 16], [256, 512, 1024], [4, 8], [3, 4])
        for bn, bk, warps, stages in grid:
            launch = GemvLaunch(bn, bk, warps, stages)

            def ours(i, w=w, x=x, res=res, kind=kind, norm=norm, launch=launch):
                if kind == "norm":
                    return gemv(x, w[i], norm=norm, launch=launch)
                return gemv(x, w[i], None, res, silu_gate=kind == "silu", launch=launch)

            try:
                us = graph_seconds(ours, timing) * 1e6
            except Exception as err:  # a launch that does not compile: note it, go on
                rows.append({"proj": name, "launch": launch.__dict__, "error": str(err)[:200]})
                continue
            rows.append({"proj": name, "launch": launch.__dict__, "us": us})
        for r in rows:
            if r["proj"] == name and "us" in r:
                r["floor_us"] = floor * 1e6
        best = min((r for r in rows if r["proj"] == name and "us" in r), key=lambda r: r["us"])
        print(f"{name}: floor {floor * 1e6:.1f} us, best {best}", flush=True)
        del w
        torch.cuda.empty_cache()
    return rows


def step_seconds(lc, timing: Timing) -> float:
    """Median graphed vanilla step, captured afresh (the switches change what it runs)."""
    lc.release_graphs()
    return timing.median(lambda: one_round(lc.target, lc.vanilla, lc.state), lc.reset)


def steps(contexts: list[int], programs: list[int], timing: Timing, bandwidth: float) -> list:
    from longspec.attention.triton_hybrid import TritonHybridAttention

    config = shape_config("llama8b")
    hf = random_model(config, torch.float16, torch.device("cuda"), 0)
    draft = random_glide(config, 0, torch.float16, torch.device("cuda"))
    _, read = weight_bytes(hf)
    out = []
    for context in contexts:
        lc = long_context(hf, draft, TritonHybridAttention(), context, [4, 16, 16, 16, 16])
        floor = (read + kv_bytes(config, context, torch.float16)) / bandwidth
        times: dict[bool, list[float]] = {True: [], False: []}
        for on in (False, True, False, True):
            lc.target.fused.gemv = on
            times[on].append(step_seconds(lc, timing))
        row = {"context": context, "floor_s": floor, "programs": {}}
        default = split_kernel.TARGET_PROGRAMS
        for n in programs:
            split_kernel.TARGET_PROGRAMS = n
            row["programs"][n] = step_seconds(lc, timing)
            print(f"{context}: {n} programs: {row['programs'][n] / floor:.3f} x floor", flush=True)
        split_kernel.TARGET_PROGRAMS = default
        for on, ts in times.items():
            row["gemv" if on else "cublas"] = {"step_s": min(ts), "runs": ts}
            print(f"{context}: gemv={on} step {min(ts) * 1e3:.3f} ms = "
                  f"{min(ts) / floor:.3f} x floor {floor * 1e3:.3f} ms", flush=True)  # fmt: skip
        out.append(row)
        lc.release_graphs()
        del lc
        torch.cuda.empty_cache()
    return out


def main(argv: list[str]) -> None:
    path, opts = argv[0], dict(a.split("=", 1) for a in argv[1:])
    contexts = [int(c) for c in opts.get("contexts", "8192,32768").split(",") if c]
    timing = Timing(torch.device("cuda"), reps=20, warmup=3)
    bandwidth = copy_bandwidth(timing, 2048) * 1e9
    result = {"environment": environment(torch.device("cuda")), "bandwidth_gb_s": bandwidth / 1e9}
    result["default_launches"] = [GEMV_LAUNCH.__dict__, WIDE_LAUNCH.__dict__]
    if opts.get("sweep", "1") == "1":
        result["sweep"] = sweep(timing, bandwidth)
    programs = [int(n) for n in opts.get("programs", "").split(",") if n]
    result["steps"] = steps(contexts, programs, timing, bandwidth)
    with open(path, "w") as fh:
        json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
