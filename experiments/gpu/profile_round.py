"""Where a decode round's time goes: graphed timings and eager kernel lists (GPU).

python experiments/gpu/profile_round.py OUT.json [shape] [context] [draft_vocab] [programs]
Random weights of ``shape`` (longspec.models.random_weights; default smollm2) with the cache
filled to ``context`` (default 4096) and tree [4,16,16,16,16]. Prints and writes:
the graphed vanilla step and tree round as the decode loop runs them, the same for each
split-KV program target in ``programs`` (comma-separated; ``split_kernel.TARGET_PROGRAMS``:
fewer programs = fewer, longer key splits and a smaller merge), the graphed phases
of a tree round (draft levels, verification, accept + commit), and for each phase run
eagerly the number of kernels, their summed GPU time and the heaviest kernels, so that
launch-bound phases (many short kernels) stand apart from bandwidth-bound ones.
"""

from __future__ import annotations

import json
import sys

import torch

from longspec.attention import split_kernel
from longspec.attention.triton_hybrid import TritonHybridAttention
from longspec.bench.scale_measure import time_phases, time_rounds
from longspec.bench.scale_setup import LongContext, long_context
from longspec.bench.timing import Timing
from longspec.decoding.loop import _commit
from longspec.decoding.proposal import Proposal
from longspec.models.glide_io import random_glide
from longspec.models.random_weights import random_model, shape_config

TREE = [4, 16, 16, 16, 16]


def kernel_profile(fn, warmup: int = 3, top: int = 25) -> dict:
    """Kernels of one call of fn: count, summed GPU microseconds, the ``top`` heaviest."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    acts = [torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=acts) as prof:
        fn()
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_time_total]
    events.sort(key=lambda e: e.device_time_total, reverse=True)
    return {
        "kernels": sum(e.count for e in events),
        "kernel_us": sum(e.device_time_total for e in events),
        "top": [
            {"name": e.key[:100], "count": e.count, "us": e.device_time_total} for e in events[:top]
        ],
    }


def eager_phases(lc: LongContext) -> dict:
    """Kernel profiles of the eager vanilla step and of the three phases of a tree round."""
    t, state, tree = lc.target, lc.state, lc.tree
    out = {"vanilla step": kernel_profile(lambda: _vanilla(lc))}
    lc.reset()
    first = tree.propose(state)
    prop = Proposal(*(x.clone() for x in first.tensors()), max_depth=first.max_depth)
    logits = t.verify(prop.tokens, prop.depths, prop.mask, state.cache).clone()

    def accept() -> None:
        lc.reset()
        _commit(state, tree, prop.tokens, tree.accept(prop, logits, state))

    out["draft levels"] = kernel_profile(lambda: (lc.reset(), tree.propose(state)))
    tokens, depths, mask = prop.tokens, prop.depths, prop.mask
    out["verify"] = kernel_profile(lambda: t.verify(tokens, depths, mask, state.cache))
    out["accept + commit"] = kernel_profile(accept)
    return out


def _vanilla(lc: LongContext) -> None:
    lc.reset()
    prop = lc.vanilla.propose(lc.state)
    logits = lc.target.verify(prop.tokens, prop.depths, prop.mask, lc.state.cache)
    _commit(lc.state, lc.vanilla, prop.tokens, lc.vanilla.accept(prop, logits, lc.state))


def build(shape: str, context: int, draft_vocab: int | None, graphs: bool) -> LongContext:
    config = shape_config(shape)
    hf = random_model(config, torch.float16, "cuda")
    draft = random_glide(config, 0, torch.float16, torch.device("cuda"))
    gen = torch.Generator().manual_seed(0)
    draft.token_ranking = torch.randperm(config.vocab_size, generator=gen)
    return long_context(
        hf, draft, TritonHybridAttention(), context, TREE, graphs=graphs, draft_vocab=draft_vocab
    )


def sweep_programs(lc: LongContext, timing: Timing, programs: list[int]) -> list[dict]:
    """Graphed vanilla step and tree round at each split-KV program target."""
    default, rows = split_kernel.TARGET_PROGRAMS, []
    try:
        for n in programs:
            split_kernel.TARGET_PROGRAMS = n
            rows.append({"target_programs": n, **time_rounds(lc, timing)})
            lc.release_graphs()
            step, tree = rows[-1]["vanilla_step_s"] * 1e6, rows[-1]["tree_round_s"] * 1e6
            print(f"programs {n}: vanilla step {step:.1f} us, tree round {tree:.1f} us")
    finally:
        split_kernel.TARGET_PROGRAMS = default
    return rows


def main(
    path: str,
    shape: str = "smollm2",
    context: int = 4096,
    vocab: int | None = 8192,
    programs: tuple[int, ...] = (),
) -> None:
    timing = Timing(torch.device("cuda"), reps=20, warmup=5)
    result: dict = {"card": torch.cuda.get_device_name(), "shape": shape, "context": context}
    result["draft_vocab"], result["tree"] = vocab, TREE
    lc = build(shape, context, vocab, graphs=True)
    result["graphed"] = time_rounds(lc, timing)
    lc.release_graphs()
    result["programs"] = sweep_programs(lc, timing, list(programs))
    result["graphed"] |= time_phases(lc, timing)
    lc.release_graphs()
    for key, value in result["graphed"].items():
        if key.endswith("_s"):
            print(f"graphed {key}: {value * 1e6:.1f} us")
    result["eager"] = eager_phases(build(shape, context, vocab, graphs=False))
    for name, prof in result["eager"].items():
        print(f"\neager {name}: {prof['kernels']} kernels, {prof['kernel_us']:.1f} us of GPU time")
        for row in prof["top"][:12]:
            print(f"  {row['us']:8.1f} us  x{row['count']:4d}  {row['name']}")
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    args = sys.argv[1:]
    main(
        args[0],
        args[1] if len(args) > 1 else "smollm2",
        int(args[2]) if len(args) > 2 else 4096,
        (None if args[3] == "none" else int(args[3])) if len(args) > 3 else 8192,
        tuple(int(n) for n in args[4].split(",")) if len(args) > 4 else (),
    )
