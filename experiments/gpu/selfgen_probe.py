"""Self-generated training text: the trainer's plain target against the decode fast path.

    python experiments/gpu/selfgen_probe.py OUT.json [N] [BATCH]

Greedy continuations (256 new tokens) of N random 768-token pycode train-split windows,
BATCH prompts at a time, by SmolLM2 in float16: once through ``TargetModel(hf, sdpa)``
(how ``train.selfgen`` generated until session 12) and once through ``decode_target``
(best attention backend, static shapes, CUDA graphs). Prints seconds, generated tokens/s
and how many continuations are identical (float16 kernels may break near-ties apart).
"""

from __future__ import annotations

import json
import sys
import time

import torch
from omegaconf import OmegaConf

from longspec.attention.sdpa import sdpa_attention
from longspec.data.prompts import special_prefix
from longspec.decoding.sampling import Generation
from longspec.loading import load_target, special_ids
from longspec.models.target import TargetModel
from longspec.train.data import tokenize_split
from longspec.train.loop import decode_target
from longspec.train.selfgen import _continue, window_starts


def main(out: str, n: int = 1024, batch: int = 512) -> None:
    model = OmegaConf.load("conf/model/smollm2.yaml")
    hf, tok = load_target(model.target, dtype=torch.float16, device="cuda")
    pad_id, eos_ids = special_ids(tok, model)
    _, pieces = tokenize_split(tok, "train")
    stream, prefix = torch.cat(pieces), special_prefix(tok)
    window = 768 - len(prefix)
    starts = window_starts(stream.numel(), n, window, 1024 - len(prefix) - window, 0)
    prompts = [prefix + stream[s : s + window].tolist() for s in starts]
    gen = Generation(max_new_tokens=256, eos_ids=tuple(eos_ids))
    runs = {}
    for name, target in (
        ("plain sdpa", TargetModel(hf, sdpa_attention)),
        ("decode fast path", decode_target(hf)),
    ):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        outputs = _continue(target, prompts, gen, pad_id, batch)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        tokens = sum(len(o) for o in outputs)
        runs[name] = {"seconds": seconds, "tokens": tokens, "tokens_per_s": tokens / seconds}
        runs[name]["outputs"] = outputs
        print(f"{name}: {seconds:.1f} s, {tokens} tokens, {tokens / seconds:.0f} tokens/s")
    a, b = (r.pop("outputs") for r in runs.values())
    same = sum(x == y for x, y in zip(a, b, strict=True))
    print(f"identical continuations: {same} of {n}")
    card = torch.cuda.get_device_name()
    payload = {"card": card, "n": n, "batch": batch, "runs": runs, "identical": same}
    with open(out, "w") as f:
        json.dump(payload, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1], *(int(a) for a in sys.argv[2:]))
