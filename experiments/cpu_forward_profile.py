"""Where a CPU target forward goes: a one-token step against a small tree's verification.

python experiments/cpu_forward_profile.py OUT.json [NODES] [PROMPT_TOKENS]

SmolLM2 (float32) with a ~2k-token pycode prompt in the cache; times (median of 7, one
process, alternating) a one-token step and a verification of NODES tokens (default 4: the
CPU default tree [1,1,1] and its root), then lists torch.profiler's top operators of each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's longspec

from longspec.bench.e2e import CONF  # noqa: E402
from longspec.bench.timing import Timing  # noqa: E402
from longspec.build import build_target  # noqa: E402
from longspec.config import register  # noqa: E402
from longspec.loading import special_ids  # noqa: E402
from longspec.metrics import environment  # noqa: E402
from longspec.tree import ancestor_mask  # noqa: E402


def setup(prompt_tokens: int):
    """SmolLM2 on the CPU with one pycode prompt prefilled into a fresh cache."""
    register()
    overrides = [f"data.prompt_tokens={prompt_tokens}", "data.num_samples=1", "device=cpu"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("bench", overrides)
    target, tokenizer = build_target(cfg, torch.device("cpu"), torch.float32)
    special_ids(tokenizer, cfg.model)
    sample = instantiate(cfg.data).load(tokenizer, cfg.model.prompt_format, cfg.model.context)[0]
    ids = torch.tensor([sample.prompt_ids])  # (1, P)
    cache = target.new_cache(1, ids.shape[1] + 64)
    target.prefill(ids, torch.tensor([ids.shape[1]]), cache)
    return target, cache


def calls(target, cache, nodes: int) -> dict:
    """name -> a forward to time: the step, and a chain-shaped tree of ``nodes`` tokens."""
    parents = torch.arange(nodes)[None] - 1  # (1, N) a chain: node i under node i - 1
    mask, depths = ancestor_mask(parents), torch.arange(nodes)[None]
    tokens = torch.randint(100, 1000, (1, nodes))
    one = (tokens[:, :1], depths[:, :1], mask[:, :1, :1])  # the root alone
    return {
        "step (1 token)": lambda: target.verify(*one, cache),
        f"verify ({nodes} tokens)": lambda: target.verify(tokens, depths, mask, cache),
    }


def top_ops(fn, rows: int = 12) -> list[dict]:
    """torch.profiler's operators of one call, by self CPU time."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        fn()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {"op": e.key, "calls": e.count, "self_ms": round(e.self_cpu_time_total / 1e3, 2)}
        for e in events[:rows]
    ]


def main(out: str, nodes: int, prompt_tokens: int) -> None:
    target, cache = setup(prompt_tokens)
    fns = calls(target, cache, nodes)
    timing = Timing(torch.device("cpu"), reps=7, warmup=1)
    medians = dict(zip(fns, timing.medians(list(fns.values())), strict=True))  # in turns
    result = {"environment": environment(torch.device("cpu")), "threads": torch.get_num_threads()}
    result["context"], result["median_ms"] = int(cache.lengths[0]), {}
    result["ops"] = {}
    for name, fn in fns.items():
        result["median_ms"][name] = round(medians[name] * 1e3, 2)
        result["ops"][name] = top_ops(fn)
        print(f"## {name}: {medians[name] * 1e3:.1f} ms")
        for op in result["ops"][name]:
            print(f"| {op['op']} | {op['calls']} | {op['self_ms']} ms |")
    Path(out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit("usage: python experiments/cpu_forward_profile.py OUT.json [NODES] [PROMPT]")
    args = [int(a) for a in sys.argv[2:4]]
    main(sys.argv[1], *(args + [4, 2048][len(args) :]))
