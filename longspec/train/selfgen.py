"""Text the target itself generates from train-split prompts (optional training data).

What the draft must predict in greedy speculative decoding is the target's own greedy
output, which differs from human-written text (a small target soon repeats itself, for
instance). So the target continues ``n`` prompts greedily through the project's vanilla
decode loop, and each continuation becomes one training sequence.

* Prompts: the special prefix plus ``prompt_tokens - len(prefix)`` ids at random offsets
  (``random.Random(seed)``) of the concatenated train-split token stream, so ``n`` is not
  limited by the number of files and prompts need not start at a file's top. Nothing from
  the eval split is used.
* Sequences: prefix + the last ``seq_len - len(prefix)`` ids of (the train stream up to the
  prompt's end, then the continuation): every sequence ends with its whole continuation
  (cut to fit), preceded by the real text the target continued. Continuations are never
  packed across prompts.

Results (window starts and continuations) are cached under ``$LONGSPEC_CACHE/train_gen/``,
keyed by the model, the settings and a digest of the train stream, so a resumed or repeated
run (or several variants sharing the data) does not generate again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from longspec.decoding.loop import generate
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.loading import cache_root
from longspec.models.target import TargetModel

log = logging.getLogger(__name__)


def window_starts(stream_len: int, n: int, window: int, min_start: int, seed: int) -> list[int]:
    """n offsets in [min_start, stream_len - window] (seeded, with replacement)."""
    hi = stream_len - window
    if window < 1 or hi < min_start:
        raise ValueError(
            f"train.selfgen: the train stream ({stream_len} ids) is too short for "
            f"{window}-id prompts after {min_start} ids of context"
        )
    rng = random.Random(seed)
    return [rng.randint(min_start, hi) for _ in range(n)]


def selfgen_rows(
    stream: Tensor,
    starts: list[int],
    outputs: list[list[int]],
    window: int,
    seq_len: int,
    prefix: list[int],
) -> Tensor:
    """(n, seq_len): prefix + stream[.. : start + window] + output, keeping the last ids."""
    body = seq_len - len(prefix)
    rows = []
    for start, out in zip(starts, outputs, strict=True):
        out = out[:body]
        end = start + window
        context = stream[end - (body - len(out)) : end].tolist()
        rows.append(prefix + context + out)
    return torch.tensor(rows, dtype=torch.long)


def _continue(
    target: TargetModel, prompts: list[list[int]], gen: Generation, pad_id: int, batch: int
) -> list[list[int]]:
    outputs: list[list[int]] = []
    for i in tqdm(range(0, len(prompts), batch), desc="self-generating", unit="batch"):
        rows = generate(target, Vanilla(), prompts[i : i + batch], gen, pad_id)
        outputs += [r.output_ids for r in rows]
    return outputs


def _cache_path(stream: Tensor, settings: list) -> Path:
    digest = hashlib.sha256(stream.numpy().tobytes()).hexdigest()[:16]
    key = json.dumps([*settings, digest, "windows-v2"], sort_keys=True)
    return cache_root() / "train_gen" / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"


def selfgen_sequences(
    target: TargetModel,
    stream: Tensor,
    prefix: list[int],
    *,
    model_name: str,
    eos_ids: tuple[int, ...],
    pad_id: int,
    n: int,
    prompt_tokens: int,
    new_tokens: int,
    batch: int,
    seed: int,
    seq_len: int,
    tag: str | None = None,
) -> tuple[Tensor, int]:
    """(n, seq_len) training sequences ending with the target's greedy continuations of
    train-stream prompts, and the number of generated ids; cached (see module doc). ``tag``
    names how ``target`` runs when that changes its outputs (its cache entry is apart)."""
    window = prompt_tokens - len(prefix)
    body = seq_len - len(prefix)
    settings = [model_name, n, prompt_tokens, new_tokens, seed, prefix]
    path = _cache_path(stream, settings + ([tag] if tag else []))
    if path.is_file():
        saved = torch.load(path, map_location="cpu", weights_only=True)
        starts = saved["starts"].tolist()
        outputs = [x.tolist() for x in saved["ids"].split(saved["lengths"].tolist())]
        log.info("self-generated data: %s (cached)", path)
    else:
        starts = window_starts(stream.numel(), n, window, max(body - window, 0), seed)
        prompts = [prefix + stream[s : s + window].tolist() for s in starts]
        gen = Generation(max_new_tokens=new_tokens, eos_ids=tuple(eos_ids))
        outputs = _continue(target, prompts, gen, pad_id, batch)
        path.parent.mkdir(parents=True, exist_ok=True)
        flat = torch.tensor([t for o in outputs for t in o], dtype=torch.long)
        lengths = torch.tensor([len(o) for o in outputs], dtype=torch.long)
        tmp = path.with_suffix(".tmp")
        torch.save({"starts": torch.tensor(starts), "ids": flat, "lengths": lengths}, tmp)
        tmp.rename(path)
        log.info("self-generated data: %d continuations, %d ids -> %s", n, len(flat), path)
    rows = selfgen_rows(stream, starts, outputs, window, seq_len, prefix)
    return rows, sum(min(len(o), body) for o in outputs)
