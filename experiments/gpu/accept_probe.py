"""The greedy acceptance and a beam level's ranking, timed in CUDA graphs (GPU).

python experiments/gpu/accept_probe.py OUT.json
Greedy acceptance of the paper's 70-node tree over SmolLM2's (49152) and Llama-3's (128256)
vocabularies: torch's rule against the two kernels at several argmax chunk sizes and
warps of the per-row program; and the per-parent top-k of a level (16 parents, 8192
draft tokens) with all columns in one program against chunked ranking. Prints
microseconds per call.
"""

from __future__ import annotations

import json
import sys

import torch
from tune_kernel import graphed  # this folder (run as a script)

from longspec import verify
from longspec.bench.scale_measure import _beam_parents
from longspec.bench.timing import Timing
from longspec.decoding import accept_kernel
from longspec.decoding.beam_kernel import best_children_kernel
from longspec.tree import ancestor_mask, node_depths
from longspec.verify import Ancestry, accept_greedy


def accept_rows(timing: Timing) -> list[dict]:
    parents = _beam_parents((4, 16, 16, 16, 16), torch.device("cuda"))  # (1, 70)
    tree = Ancestry(ancestor_mask(parents, 5), node_depths(parents, 5))
    rows = []
    for vocab in (49152, 128256):
        logits = torch.randn(1, 70, vocab, device="cuda", dtype=torch.float16)
        tokens = logits.argmax(-1).gather(1, parents.clamp_min(0))  # a deep accepted path

        def run(tokens=tokens, logits=logits) -> None:
            accept_greedy(tokens, parents, logits, 5, tree)

        ways = {}
        on_kernel = verify._on_kernel
        verify._on_kernel = lambda _: False
        ways["torch"] = timing.median(graphed(run)) / 20 * 1e6
        verify._on_kernel = on_kernel
        for chunk in (2048, 4096, 8192):
            for warps in (1, 2, 4, 8):
                accept_kernel.CHUNK, accept_kernel.ACCEPT_WARPS = chunk, warps
                ways[f"kernel chunk {chunk} warps {warps}"] = timing.median(graphed(run)) / 20 * 1e6
        for name, us in ways.items():
            rows.append({"what": "accept", "vocab": vocab, "way": name, "us": us})
            print(f"| accept | {vocab} | {name} | {us:.1f} |")
    return rows


def topk_rows(timing: Timing) -> list[dict]:
    rows = []
    scores = torch.randn(1, 16, 8192, device="cuda")
    cum = torch.zeros(1, 16, device="cuda")
    for chunk in (None, 512, 1024, 2048, 4096):
        us = timing.median(graphed(lambda c=chunk: best_children_kernel(scores, cum, 16, 16, c)))
        us = us / 20 * 1e6
        rows.append({"what": "level ranking", "vocab": 8192, "way": f"chunk {chunk}", "us": us})
        print(f"| level ranking | 8192 | chunk {chunk} | {us:.1f} |")
    return rows


def main(path: str) -> None:
    timing = Timing(torch.device("cuda"), reps=20, warmup=3)
    rows = accept_rows(timing) + topk_rows(timing)
    with open(path, "w") as f:
        json.dump({"card": torch.cuda.get_device_name(), "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main(sys.argv[1])
