"""Text the target itself generates from train-split prompts (optional training data).

Greedy continuations of pycode *train* prompts, produced by the project's own vanilla
decode loop, so the draft also sees the target's own (greedy) style of text, which is
exactly what it must predict during greedy speculative decoding. Nothing from the eval
split is used. Results are cached under ``$LONGSPEC_CACHE/train_gen/`` (keyed by model and
settings), so a resumed or repeated run does not generate again.
"""

from __future__ import annotations

import hashlib
import json
import logging

import torch
from torch import Tensor
from tqdm import tqdm

from longspec.data.pycode import PyCodeDataset
from longspec.decoding.loop import generate
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.loading import cache_root
from longspec.models.target import TargetModel

log = logging.getLogger(__name__)


def generated_pieces(
    target: TargetModel,
    tokenizer,
    *,
    model_name: str,
    eos_ids: tuple[int, ...],
    pad_id: int,
    n: int,
    prompt_tokens: int,
    new_tokens: int,
    batch: int,
    seed: int,
    root=None,
) -> list[Tensor]:
    """One id tensor per train prompt: the prompt followed by the target's greedy output."""
    key = json.dumps(
        [model_name, n, prompt_tokens, new_tokens, seed, str(root), len(tokenizer)],
        sort_keys=True,
    )
    path = cache_root() / "train_gen" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        log.info("self-generated data: %s (cached)", path)
        return list(saved["ids"].split(saved["lengths"].tolist()))
    data = PyCodeDataset(
        split="train", prompt_tokens=prompt_tokens, num_samples=n, seed=seed, root=root
    )
    prompts = [s.prompt_ids for s in data.load(tokenizer, "raw")]
    gen = Generation(max_new_tokens=new_tokens, eos_ids=tuple(eos_ids))
    pieces: list[Tensor] = []
    for i in tqdm(range(0, len(prompts), batch), desc="self-generating", unit="batch"):
        chunk = prompts[i : i + batch]
        rows = generate(target, Vanilla(), chunk, gen, pad_id)
        pieces += [
            torch.tensor(p + r.output_ids, dtype=torch.long)
            for p, r in zip(chunk, rows, strict=True)
        ]
    path.parent.mkdir(parents=True, exist_ok=True)
    lengths = torch.tensor([len(p) for p in pieces], dtype=torch.long)
    tmp = path.with_suffix(".tmp")
    torch.save({"ids": torch.cat(pieces), "lengths": lengths}, tmp)
    tmp.rename(path)
    log.info(
        "self-generated data: %d sequences, %d tokens -> %s", len(pieces), int(lengths.sum()), path
    )
    return pieces
