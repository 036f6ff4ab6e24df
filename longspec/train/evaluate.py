"""Evaluation of a draft under training: eval-split loss/accuracy and acceptance.

* ``evaluate``: teacher-forced metrics on packed eval-split sequences with fixed
  anchor-offset positions, once per cross-attention lag d = 1..lags: cross-entropy on the
  true next token, KL(target || draft), top-1 accuracy, top-1 agreement with the target's
  argmax, and a chain acceptance proxy 1 + sum_k prod_{j<=k} agree_j (gamma = 4: draft
  token k is proposed at lag k). It ignores that decoding follows the target's own tokens.
* ``decode_tau``: the real thing, greedy seq/tree decoding through the project's decode
  loop on pycode eval prompts; tau = new tokens / target forwards.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from longspec.data.pycode import PyCodeDataset
from longspec.decoding.glide import ChainDecoding, TreeDecoding
from longspec.decoding.loop import generate
from longspec.decoding.sampling import Generation
from longspec.models.glide import GlideLayer
from longspec.models.target import TargetModel
from longspec.train.forward import draft_logits, draft_loss, target_pass
from longspec.train.positions import anchor_offset_positions


@dataclass
class EvalSet:
    ids: Tensor  # (N, T) long, CPU
    positions: Tensor  # (N, T) long, CPU (fixed anchor-offset positions)


def make_eval_set(ids: Tensor, max_anchors: int, max_offset: int, seed: int) -> EvalSet:
    gen = torch.Generator().manual_seed(seed + 7919)
    pos = anchor_offset_positions(ids.shape[0], ids.shape[1], max_anchors, max_offset, gen)
    return EvalSet(ids, pos)


def autocast(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


def chain_estimate(agree: Sequence[float], gamma: int = 4) -> float:
    """1 + sum_{k<=gamma} prod_{j<=k} agree[j-1] (agree[j-1]: agreement at lag j)."""
    total, run = 1.0, 1.0
    for k in range(min(gamma, len(agree))):
        run *= agree[k]
        total += run
    return total


@torch.no_grad()
def evaluate(
    layer: GlideLayer,
    target: TargetModel,
    data: EvalSet,
    *,
    window: int,
    lags: int,
    batch: int,
    amp_dtype: torch.dtype | None,
) -> dict[str, float]:
    """Teacher-forced eval metrics (see module doc), averaged over tokens and lags 1..lags."""
    was_training = layer.training
    layer.eval()
    device = target.device
    sums = {d: torch.zeros(5, dtype=torch.float64) for d in range(1, lags + 1)}
    for i in range(0, data.ids.shape[0], batch):
        ids = data.ids[i : i + batch].to(device)
        pos = data.positions[i : i + batch].to(device)
        out = target_pass(target, ids, pos, keep_logits=True)
        for d in sums:
            lag = torch.full_like(ids, d)
            with autocast(device, amp_dtype):
                logits, valid = draft_logits(layer, target, ids, pos, out, lag, window)
            r = draft_loss(logits, ids, valid, out, distill_weight=1.0)
            n = float(r.n)
            sums[d] += torch.tensor(
                [float(r.ce) * n, float(r.kl) * n, float(r.acc) * n, float(r.agree) * n, n],
                dtype=torch.float64,
            )
        del out
    layer.train(was_training)
    per = {d: (s[:4] / s[4]).tolist() for d, s in sums.items()}
    metrics = {
        "eval/ce": sum(v[0] for v in per.values()) / lags,
        "eval/kl": sum(v[1] for v in per.values()) / lags,
        "eval/acc": sum(v[2] for v in per.values()) / lags,
        "eval/agree": sum(v[3] for v in per.values()) / lags,
    }
    for d, v in per.items():
        metrics[f"eval/agree_lag{d}"] = v[3]
    metrics["eval/tau_est_chain4"] = chain_estimate([per[d][3] for d in sorted(per)], 4)
    return metrics


def eval_prompts(tokenizer, n: int, prompt_tokens: int, root=None) -> list[list[int]]:
    """The pycode eval prompts of the default job (eval split, seed 0)."""
    data = PyCodeDataset(
        split="eval", prompt_tokens=prompt_tokens, num_samples=n, seed=0, root=root
    )
    return [s.prompt_ids for s in data.load(tokenizer, "raw")]


@torch.no_grad()
def decode_tau(
    layer: GlideLayer,
    target: TargetModel,
    prompts: list[list[int]],
    *,
    eos_ids: tuple[int, ...],
    pad_id: int,
    new_tokens: int,
    tree_shape: Sequence[int],
    gamma: int,
    window: int,
) -> dict[str, float]:
    """Greedy tau of chain (gamma) and tree (tree_shape) decoding, one prompt at a time."""
    draft = copy.deepcopy(layer).to(dtype=target.dtype).eval().requires_grad_(False)
    gen = Generation(max_new_tokens=new_tokens, eos_ids=tuple(eos_ids))
    metrics: dict[str, float] = {}
    strategies = {
        f"tau_seq{gamma}": ChainDecoding(draft, gamma=gamma, window=window),
        "tau_tree": TreeDecoding(draft, list(tree_shape), window=window),
    }
    for name, strategy in strategies.items():
        new, forwards = 0, 0
        for p in prompts:
            (row,) = generate(target, strategy, [p], gen, pad_id)
            new += row.new_tokens
            forwards += row.target_forwards
        metrics[f"eval/{name}"] = new / max(forwards, 1)
    return metrics
