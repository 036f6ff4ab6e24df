"""GPU check: the CUDA-graph path gives the same greedy tokens as the eager path.

python experiments/gpu/check_graphs.py [model]   (default tiny_llama, float16 on CUDA)
"""

from __future__ import annotations

import sys
import time

import torch
from omegaconf import OmegaConf

from longspec.attention import sdpa_attention
from longspec.decoding.glide import ChainDecoding, TreeDecoding
from longspec.decoding.magicdec import MagicDec
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.loading import load_target
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel


def main(model: str = "tiny_llama") -> None:
    spec = OmegaConf.load(f"conf/model/{model}.yaml").target
    hf, _ = load_target(spec, dtype=torch.float16, device="cuda")
    eager = TargetModel(hf, sdpa_attention)
    graphed = TargetModel(hf, sdpa_attention, static=True)
    draft = random_glide(hf.config, 0, torch.float16, "cuda")
    makers = {
        "vanilla": Vanilla,
        "tree": lambda: TreeDecoding(draft, (4, 16, 16, 16, 16)),
        "seq": lambda: ChainDecoding(draft, 4),
        "magicdec": lambda: MagicDec(4, 32, 1024),
    }
    gen = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 250, (n,), generator=gen).tolist() for n in (1500, 700, 2000)]
    g = Generation(max_new_tokens=64, eos_ids=())
    print("| method | same tokens | eager s | graphed s |")
    for name, make in makers.items():
        times, outs = [], []
        for target, strat in ((eager, make()), (graphed, make())):
            strat.generate(target, prompts[:1], Generation(8, ()), 0)  # warm-up / capture
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            outs.append([strat.generate(target, [p], g, 0)[0].output_ids for p in prompts])
            torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
        batch = [r.output_ids for r in make().generate(graphed, prompts, g, 0)]
        same = outs[0] == outs[1] == batch
        print(f"| {name} | {same} | {times[0]:.2f} | {times[1]:.2f} |")


if __name__ == "__main__":
    main(*sys.argv[1:])
