"""Shared by benchmarks: load the model once, run several methods on the same prompts."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from longspec.build import build_strategy, build_target, resolve_device, resolve_dtype
from longspec.data.sample import split_fitting
from longspec.decoding.loop import reserve_cache
from longspec.decoding.sampling import Generation
from longspec.decoding.strategy import announce
from longspec.loading import special_ids
from longspec.metrics import PhaseTimer, environment, strategy_fields

if TYPE_CHECKING:
    from longspec.models.target import TargetModel

log = logging.getLogger(__name__)


def run_methods(cfg: DictConfig, methods: list[tuple[str, DictConfig]]) -> tuple[list[dict], dict]:
    """Each (name, decode config) on cfg.data's prompts; one row of totals per method."""
    device = resolve_device(cfg.device)
    target, tokenizer = build_target(cfg, device, resolve_dtype(cfg.dtype, device))
    pad_id, eos_ids = special_ids(tokenizer, cfg.model)
    gen = Generation(
        cfg.generation.max_new_tokens,
        eos_ids,
        cfg.generation.temperature,
        cfg.generation.top_p,
        cfg.seed,
    )
    samples = instantiate(cfg.data).load(tokenizer, cfg.model.prompt_format, cfg.model.context)
    samples, _ = split_fitting(samples, cfg.model.context - gen.max_new_tokens)
    prompts = [s.prompt_ids for s in samples]
    rows = []
    for name, decode_cfg in methods:
        strategy = build_strategy(decode_cfg, target, cfg)
        timed = time_method(strategy, target, prompts, gen, pad_id)
        rows.append({"method": name, **timed, **strategy_fields(strategy)})
        log.info("%s: tau %.2f, %.1f tokens/s", name, rows[-1]["tau"], rows[-1]["tokens_per_s"])
    env = environment(device) | {"prompt_tokens": [len(p) for p in prompts]}
    return rows, env


def time_method(
    strategy: Any, target: TargetModel, prompts: list[list[int]], gen: Generation, pad_id: int
) -> dict:
    """Warm up once, then decode every prompt (batch 1) with synchronised timers.

    A static target's pooled cache is sized for the longest prompt before the warm-up,
    so the graphs it captures are the ones the timed decodes replay."""
    reserve_cache(target, [max(prompts, key=len)], gen, getattr(strategy, "max_nodes", 0))
    announce(strategy, prompts)
    strategy.generate(
        target,
        prompts[:1],
        Generation(8, gen.eos_ids, gen.temperature, gen.top_p, gen.seed),
        pad_id,
    )
    timer = PhaseTimer(target.device)
    outputs, new, forwards = [], 0, 0
    if target.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target.device)
    for prompt in tqdm(prompts, desc="prompts", leave=False):
        row = strategy.generate(target, [prompt], gen, pad_id, timer)[0]
        outputs.append(row.output_ids)
        new += row.new_tokens
        forwards += row.target_forwards
    decode_s = timer.decode_seconds()
    prefill_s = timer.seconds.get("prefill", 0.0)
    return {
        "tau": new / max(forwards, 1),
        "tokens_per_s": new / decode_s if decode_s else 0.0,
        "end_to_end_tokens_per_s": new / (decode_s + prefill_s) if decode_s else 0.0,
        "new_tokens": new,
        "target_forwards": forwards,
        "decode_s": decode_s,
        "prefill_s": prefill_s,
        "phase_s": dict(timer.seconds),
        "outputs": outputs,
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(target.device))
        if target.device.type == "cuda"
        else None,
    }
