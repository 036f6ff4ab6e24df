"""Tune the split-KV kernel's launch settings and profile a decode step (GPU).

python experiments/gpu/tune_kernel.py OUT.json [grid|stages|small|splits]
Times ``split_attention_lse`` (tokens in flight read from the cache, tree mask) in CUDA
graphs for verification-shaped (70 tokens) and step-shaped (1 token) calls against the
time to read the keys/values once, for each launch setting; then profiles one eager vanilla
step and one eager tree round of the Llama-3-8B shape at 32k to list where the time goes.
``grid``: only the grid-order comparison (``Launch.rows_first``) of a few settings, no
profile; ``stages``: a few settings at 2 and 3 stages (``Launch.stages``), no profile;
``small``: the SmolLM2-shaped calls at each row-block size and program target, no profile;
``splits``: every call at each ``Launch.min_split_blocks`` (the shortest key split of a
block of more than 16 rows), no profile.
(Session 9 compared TMA descriptor loads of the full key blocks with pointer loads here,
``results/tune_kernel_h200_tma*.json``: no gain once the masked tail was unpipelined, so
the project keeps pointer loads.)
"""

from __future__ import annotations

import itertools
import json
import sys

import torch

from longspec.attention import split_kernel as sk
from longspec.bench.timing import Timing, copy_bandwidth
from longspec.tree import ancestor_mask

CASES = [  # (name, Hq, Hkv, D, tokens, context)
    ("8b verify 8k", 32, 8, 128, 70, 8192),
    ("8b verify 32k", 32, 8, 128, 70, 32768),
    ("8b verify 128k", 32, 8, 128, 70, 131072),
    ("8b step 32k", 32, 8, 128, 1, 32768),
    ("smollm2 verify 4k", 9, 3, 64, 70, 4608),
    ("smollm2 step 4k", 9, 3, 64, 1, 4608),
]
SETTINGS = [  # each with ``s`` stages for every call, a decode step's too
    sk.Launch(m, n, w, s, step_stages=s)
    for m, n, w, s in itertools.product([64, 128], [64, 128], [4, 8], [2, 3])
]
GRID_SETTINGS = [  # the best settings of tune_kernel_h200_v2.json, in both grid orders
    sk.Launch(m, n, w, s, step_stages=s, rows_first=rows_first)
    for m, n, w, s in [(64, 64, 4, 2), (64, 64, 4, 3), (128, 64, 8, 3), (64, 128, 4, 2)]
    for rows_first in (False, True)
]

STAGE_SETTINGS = [  # pipeline depth with the masked tail unpipelined (session 9)
    sk.Launch(m, n, w, s, step_stages=s)
    for m, n, w, s in [(64, 64, 4, 2), (64, 64, 4, 3), (64, 128, 4, 3), (128, 128, 8, 3)]
]


def graphed(fn, reps: int = 20):
    """A callable replaying ``reps`` calls of fn as one CUDA graph."""
    fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(reps):
            fn()
    return graph.replay


def case_inputs(hq, hkv, d, n, ctx):
    q = torch.randn(1, hq, n, d, device="cuda", dtype=torch.float16)
    k = torch.randn(1, hkv, ctx + n + 64, d, device="cuda", dtype=torch.float16)
    v = torch.randn_like(k)
    lengths = torch.tensor([ctx], device="cuda")
    parents = torch.tensor([[-1] + [max(i // 4, 0) for i in range(n - 1)]], device="cuda")
    return q, k, v, lengths, ancestor_mask(parents)


def tune(
    timing: Timing, bandwidth: float, settings: list[sk.Launch], cases: list | None = None
) -> list[dict]:
    rows = []
    for name, hq, hkv, d, n, ctx in cases or CASES:
        q, k, v, lengths, mask = case_inputs(hq, hkv, d, n, ctx)
        floor = 2 * hkv * ctx * d * 2 / (bandwidth * 1e9)  # K and V read once
        for launch in settings:
            sk.LAUNCH = launch
            try:
                args = (q, k, v, lengths, None, True, mask if n > 1 else None, q.dtype)
                replay = graphed(lambda a=args: sk.split_attention_lse(*a))
                sec = timing.median(replay) / 20
            except Exception as err:  # a setting that does not compile on this card
                print(name, launch, "failed:", str(err)[:120])
                continue
            rows.append({"case": name, **vars(launch), "us": sec * 1e6, "floor_us": floor * 1e6})
            print(f"| {name} | {launch} | {sec * 1e6:.1f} us | floor {floor * 1e6:.1f} us |")
    return rows


SMALL_BLOCKS = [16, 32, 64]  # max_block_m for the SmolLM2-shaped calls ("small" mode)
SMALL_PROGRAMS = [64, 128, 256, 512]  # split_kernel.TARGET_PROGRAMS, ditto


def tune_small(timing: Timing, bandwidth: float) -> list[dict]:
    """The SmolLM2-shaped calls at each row-block size and program target (how many
    programs a launch aims for, so how many key splits the merge adds up)."""
    default, rows = sk.TARGET_PROGRAMS, []
    small = [case for case in CASES if case[0].startswith("smollm2")]
    try:
        for programs in SMALL_PROGRAMS:
            sk.TARGET_PROGRAMS = programs
            settings = [sk.Launch(max_block_m=m, min_split_blocks=1) for m in SMALL_BLOCKS]
            for row in tune(timing, bandwidth, settings, small):
                rows.append(row | {"target_programs": programs})
    finally:
        sk.TARGET_PROGRAMS = default
    return rows


# The program target of many-row blocks was swept first, through a Launch field that was
# not kept (96-512: 128 best for SmolLM2, 512 for Llama-8B; tune_kernel_h200_programs.json);
# the kernel keeps TARGET_PROGRAMS and gives a many-row split at least ``min_split_blocks``
# key blocks instead. The other modes run at the default min_split_blocks (6) since.
SPLIT_SETTINGS = [sk.Launch(min_split_blocks=n) for n in (1, 2, 3, 4, 6, 8, 12)]


def profile_rounds() -> dict[str, list[dict]]:
    """Kernel time of one eager vanilla step and one eager tree round, 8B shape at 32k."""
    from longspec.attention.triton_hybrid import TritonHybridAttention
    from longspec.bench.scale_setup import long_context, one_round
    from longspec.models.glide_io import random_glide
    from longspec.models.random_weights import random_model, shape_config

    sk.LAUNCH = sk.Launch()
    hf = random_model(shape_config("llama8b"), torch.float16, "cuda")
    draft = random_glide(hf.config, 0, torch.float16, torch.device("cuda"))
    lc = long_context(hf, draft, TritonHybridAttention(), 32768, [4, 16, 16, 16, 16], graphs=False)
    out = {}
    for name, strategy in (("vanilla step", lc.vanilla), ("tree round", lc.tree)):
        out[name] = _profile(lambda s=strategy: one_round(lc.target, s, lc.state), name)
        lc.reset()
    return out


def _profile(fn, name: str) -> list[dict]:
    from profile_round import kernel_profile  # this folder (run as a script)

    prof = kernel_profile(fn, top=40)
    print(
        f"eager {name}, 8b at 32k: GPU kernel time {prof['kernel_us'] / 1e3:.2f} ms in "
        f"{prof['kernels']} kernels"
    )
    for row in prof["top"]:
        print(f"{row['us'] / 1e3:8.3f} ms  x{row['count']:4d}  {row['name'][:90]}")
    return [{"name": "total", "count": prof["kernels"], "us": prof["kernel_us"]}, *prof["top"]]


def main(path: str, mode: str) -> None:
    timing = Timing(torch.device("cuda"), reps=10, warmup=2)
    bandwidth = copy_bandwidth(timing, 2048)
    result = {"card": torch.cuda.get_device_name(), "bandwidth_gb_s": bandwidth}
    if mode == "small":
        result["tuning"] = tune_small(timing, bandwidth)
    else:
        result["tuning"] = tune(timing, bandwidth, MODES[mode])
    if not mode:
        result["profile"] = profile_rounds()
    with open(path, "w") as f:
        json.dump(result, f, indent=2)


MODES = {
    "": SETTINGS,
    "grid": GRID_SETTINGS,
    "stages": STAGE_SETTINGS,
    "small": [],
    "splits": SPLIT_SETTINGS,
}

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] not in MODES):
        sys.exit("usage: tune_kernel.py OUT.json [grid|stages|small|splits]")
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")
