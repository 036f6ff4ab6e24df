"""GPU: the few-row projection kernel (longspec.models.gemm_rows) against cuBLAS, then the
graphed verification and tree round with it on and off.

1. Per projection of a layer (q|k|v and gate|up from the RMSNorm of the residual rows, o
   plus residual, down from [gate | up] plus residual), SmolLM2 and Llama-3-8B shapes, 16
   rows (a draft level) and 70 (a 69-node tree's verification): microseconds per call from
   a CUDA graph of calls over enough weight copies that L2 holds none of them, cuBLAS with
   the kernel it needs beside it (add_rms_norm, silu_mul, an add) against each launch.
2. Random weights of each shape at its context (float16, tree [4,16,16,16,16]): the graphed
   vanilla step, tree round, verification and draft levels with ``FusedLayers.rows`` off and
   on, in turns (off, on, off, on); best of each.

    python experiments/gpu/rows_probe.py OUT.json [sweep=1] [launches=small|large]
        [shapes=smollm2,llama8b] [rounds=smollm2:4096,llama8b:32768]
"""

from __future__ import annotations

import itertools
import json
import sys

import torch

from longspec.attention.triton_hybrid import TritonHybridAttention
from longspec.bench.scale_measure import time_phases, time_rounds
from longspec.bench.scale_setup import long_context
from longspec.bench.timing import Timing
from longspec.metrics import environment
from longspec.models.fused_kernels import add_rms_norm, silu_mul
from longspec.models.gemm_rows import ROWS_LAUNCH, RowsLaunch, gemm_rows
from longspec.models.gemv import RowNorm
from longspec.models.glide_io import random_glide
from longspec.models.random_weights import random_model, shape_config

L2_CLEAR_BYTES = 256 << 20  # weight copies per graph: at least this many bytes in all
SHAPES = {  # shape: {projection: (outputs, inputs, input kind)}
    "smollm2": {
        "qkv": (960, 576, "norm"),
        "o": (576, 576, "residual"),
        "gate_up": (3072, 576, "norm"),
        "down": (576, 1536, "silu"),
    },
    "llama8b": {
        "qkv": (6144, 4096, "norm"),
        "o": (4096, 4096, "residual"),
        "gate_up": (28672, 4096, "norm"),
        "down": (4096, 14336, "silu"),
    },
}
LAUNCHES = {
    # first sweep (rows_probe_h200_sweep1.json): large row blocks, short inner steps
    "large": [
        *(
            RowsLaunch(128, n, k, 4, s)
            for n, k, s in itertools.product([16, 32, 64], [64, 128], [2])
        ),
        *(RowsLaunch(128, n, 64, 4, s) for n, s in itertools.product([32, 64], [1, 3])),
        RowsLaunch(64, 32, 64, 4, 2),
        RowsLaunch(64, 64, 64, 4, 2),
    ],
    # second: small row blocks (more programs), long inner steps (fewer dependent loads)
    "small": [
        RowsLaunch(m, n, k, 4, s)
        for m, n, k, s in itertools.product([16, 32], [16, 32, 64], [128, 256, 512], [1, 2])
    ],
}


def graph_seconds(fn, copies: int, timing: Timing) -> float:
    """Seconds per call of fn(i) for i < copies, replayed from one CUDA graph."""
    from tune_kernel import graphed  # this folder (run as a script)

    return timing.median(graphed(lambda: [fn(i) for i in range(copies)], 1)) / copies


def _inputs(n_out: int, n_in: int, kind: str, n_rows: int, copies: int):
    dev, half = "cuda", torch.float16
    w = torch.randn(copies, n_out, n_in, device=dev, dtype=half) * 0.02
    x = torch.randn(1, n_rows, 2 * n_in if kind == "silu" else n_in, device=dev).half()
    res = torch.randn(1, n_rows, n_out, device=dev, dtype=half)
    norm = RowNorm(torch.rand(n_in, device=dev, dtype=half) + 0.5, 1e-5)
    return w, x, res, norm


def sweep_one(
    shape: str, name: str, n_rows: int, launches: list[RowsLaunch], timing: Timing
) -> list[dict]:
    n_out, n_in, kind = SHAPES[shape][name]
    copies = max(4, min(256, L2_CLEAR_BYTES // (n_out * n_in * 2)))
    w, x, res, norm = _inputs(n_out, n_in, kind, n_rows, copies)
    key = {"shape": shape, "proj": name, "rows": n_rows}

    def cublas(i):
        if kind == "norm":
            return torch.nn.functional.linear(add_rms_norm(x, None, norm.weight, 1e-5)[1], w[i])
        return res + torch.nn.functional.linear(silu_mul(x) if kind == "silu" else x, w[i])

    rows = [key | {"launch": "cublas", "us": graph_seconds(cublas, copies, timing) * 1e6}]
    for launch in launches:

        def ours(i, launch=launch):
            if kind == "norm":
                return gemm_rows(x, w[i], norm=norm, launch=launch)
            return gemm_rows(x, w[i], None, res, silu_gate=kind == "silu", launch=launch)

        try:
            us = graph_seconds(ours, copies, timing) * 1e6
        except Exception as err:  # a launch that does not compile: note it, go on
            rows.append(key | {"launch": launch.__dict__, "error": str(err)[:200]})
            continue
        rows.append(key | {"launch": launch.__dict__, "us": us})
    timed = [r for r in rows[1:] if "us" in r]
    best = min(timed, key=lambda r: r["us"])
    print(f"{shape} {name} {n_rows} rows: cublas {rows[0]['us']:.1f} us, best {best['us']:.1f} "
          f"{best['launch']}", flush=True)  # fmt: skip
    return rows


def rounds(shape: str, context: int, timing: Timing) -> dict:
    """Graphed step, round and phases with gemm_rows off and on, in turns; best of each."""
    config = shape_config(shape)
    hf = random_model(config, torch.float16, torch.device("cuda"), 0)
    draft = random_glide(config, 0, torch.float16, torch.device("cuda"))
    vocab = 8192 if shape == "smollm2" else None
    gen = torch.Generator().manual_seed(0)
    draft.token_ranking = torch.randperm(config.vocab_size, generator=gen)  # for draft_vocab
    lc = long_context(
        hf, draft, TritonHybridAttention(), context, [4, 16, 16, 16, 16], draft_vocab=vocab
    )
    runs: dict[str, list[dict]] = {"off": [], "on": []}
    for on in (False, True, False, True):
        lc.target.fused.rows = on
        lc.release_graphs()
        row = time_rounds(lc, timing)
        lc.release_graphs()
        row |= time_phases(lc, timing)
        runs["on" if on else "off"].append(row)
        times = ", ".join(f"{k} {v * 1e6:.0f} us" for k, v in row.items() if k.endswith("_s"))
        print(f"{shape} {context} rows={on}: {times}", flush=True)
    best = {
        mode: {k: min(r[k] for r in rs) for k in rs[0] if k.endswith("_s")}
        for mode, rs in runs.items()
    }
    lc.release_graphs()
    del lc, hf
    torch.cuda.empty_cache()
    return {"shape": shape, "context": context, "runs": runs, "best": best}


def main(argv: list[str]) -> None:
    path, opts = argv[0], dict(a.split("=", 1) for a in argv[1:])
    timing = Timing(torch.device("cuda"), reps=20, warmup=3)
    result: dict = {"environment": environment(torch.device("cuda"))}
    result["default_launch"] = ROWS_LAUNCH.__dict__
    if opts.get("sweep", "1") == "1":
        launches = LAUNCHES[opts.get("launches", "small")]
        shapes = opts.get("shapes", ",".join(SHAPES)).split(",")
        result["sweep"] = [
            r
            for shape in shapes
            for name in SHAPES[shape]
            for n_rows in (16, 70)
            for r in sweep_one(shape, name, n_rows, launches, timing)
        ]
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)
    plan = opts.get("rounds", "smollm2:4096,llama8b:32768")
    result["rounds"] = []
    for item in filter(None, plan.split(",")):
        shape, context = item.split(":")
        result["rounds"].append(rounds(shape, int(context), timing))
        with open(path, "w") as fh:
            json.dump(result, fh, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
