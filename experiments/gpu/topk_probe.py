"""Ways to take a beam level's per-parent top-k on a GPU, timed in CUDA graphs.

python experiments/gpu/topk_probe.py OUT.json
Scores (1, n, K) float32 for the level sizes of the paper's tree and the draft vocabularies
(8192 kept tokens, the full SmolLM2 and Llama-3 vocabularies): torch.topk per row, a
two-pass top-k (the top-k of each chunk of ``chunk`` columns, then of the candidates), and
torch.sort. Prints microseconds per call.
"""

from __future__ import annotations

import json
import sys

import torch
from tune_kernel import graphed  # this folder (run as a script)

from longspec.bench.timing import Timing


def chunked_topk(scores: torch.Tensor, k: int, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(..., K) -> top-k values, indices (..., k) via the top-k of each chunk first."""
    *lead, width = scores.shape
    parts = scores.view(*lead, width // chunk, chunk).topk(k, dim=-1)  # (..., C, k)
    base = torch.arange(0, width, chunk, device=scores.device)[:, None]  # (C, 1)
    cand_idx = (parts.indices + base).flatten(-2)  # (..., C*k)
    top = parts.values.flatten(-2).topk(k, dim=-1)
    return top.values, cand_idx.gather(-1, top.indices)


def main(path: str) -> None:
    timing = Timing(torch.device("cuda"), reps=20, warmup=3)
    rows = []
    for n in (1, 4, 16):
        for vocab in (8192, 49152, 128256):
            scores = torch.randn(1, n, vocab, device="cuda")
            ways = {
                "topk": lambda s=scores: s.topk(16, dim=-1),
                "sort": lambda s=scores: s.sort(dim=-1, descending=True),
                "flat topk": lambda s=scores: s.flatten(1).topk(16, dim=-1),
            }
            for chunk in (256, 1024):
                if vocab % chunk == 0:
                    ways[f"chunked {chunk}"] = lambda s=scores, c=chunk: chunked_topk(s, 16, c)
            for name, fn in ways.items():
                us = timing.median(graphed(fn)) / 20 * 1e6
                rows.append({"rows": n, "vocab": vocab, "way": name, "us": us})
                print(f"| {n} | {vocab} | {name} | {us:.1f} |")
    with open(path, "w") as f:
        json.dump({"card": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
