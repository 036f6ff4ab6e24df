"""Where does float16 tree decoding leave vanilla's tokens, and why (GPU)?

python experiments/gpu/divergence.py OUT.json [hydra overrides]
SmolLM2 + the shipped draft on the 2 pycode prompts of experiments/auto_shape.py (2048
tokens, 256 new, greedy). For each tree shape whose output differs from vanilla's, the
first differing position: the two tokens, the float16 logit margin between them after the
common prefix (one plain eager forward), and which one a float32 forward picks. A margin
within float16 rounding, with float32 siding with either, is a near-tie broken by rounding
(verification runs 1+N tokens per forward, vanilla one), not a lossless-rule defect.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hydra.utils import instantiate

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import auto_shape  # noqa: E402

from longspec.attention import sdpa_attention  # noqa: E402
from longspec.bench.common import run_methods  # noqa: E402
from longspec.data.sample import split_fitting  # noqa: E402
from longspec.loading import load_target  # noqa: E402
from longspec.models.target import TargetModel  # noqa: E402

SHAPES = [[2, 2, 2], [4, 4, 4], [4, 16, 16, 16, 16]]


def last_logits(target: TargetModel, ids: list[int]) -> torch.Tensor:
    """(V,) float32 logits after ``ids`` from one eager forward of the plain path."""
    x = torch.tensor([ids], device=target.device)
    cache = target.new_cache(1, len(ids) + 1)
    return target.prefill(x, torch.tensor([len(ids)], device=target.device), cache)[0].float()


def main(out: str, overrides: list[str]) -> None:
    cfg = auto_shape.config(["device=cuda", "hydra.run.dir=/tmp/div", *overrides])
    device = torch.device("cuda" if cfg.device in ("auto", "cuda") else cfg.device)
    methods = [m for m in auto_shape.methods(cfg) if m[0] == "vanilla" or any(
        m[0] == "tree " + json.dumps(s).replace(" ", "") for s in SHAPES)]  # fmt: skip
    rows, env = run_methods(cfg, methods)
    base = rows[0]["outputs"]
    models, prompts = {}, []
    for dt in (torch.float16, torch.float32):
        hf, tokenizer = load_target(cfg.model.target, dtype=dt, device=device)
        models[dt] = TargetModel(hf, sdpa_attention)
    samples = instantiate(cfg.data).load(tokenizer, cfg.model.prompt_format, cfg.model.context)
    samples, _ = split_fitting(samples, cfg.model.context - cfg.generation.max_new_tokens)
    prompts = [s.prompt_ids for s in samples]
    report = []
    for row in rows[1:]:
        for p, (want, got) in enumerate(zip(base, row["outputs"], strict=True)):
            if want == got:
                report.append({"method": row["method"], "prompt": p, "same": True})
                continue
            i = next(j for j, (a, b) in enumerate(zip(want, got, strict=False)) if a != b)
            ids = prompts[p] + want[:i]
            entry = {"method": row["method"], "prompt": p, "same": False, "position": i,
                     "vanilla_token": want[i], "tree_token": got[i]}  # fmt: skip
            for dt, target in models.items():
                logits = last_logits(target, ids)
                name = str(dt).split(".")[-1]
                entry[f"{name}_margin"] = float(logits[want[i]] - logits[got[i]])
                entry[f"{name}_argmax"] = int(logits.argmax())
            report.append(entry)
            print(entry)
    Path(out).write_text(json.dumps({"environment": env, "first_differences": report}, indent=2,
                                    default=str))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
