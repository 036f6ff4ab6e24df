"""Run one job: build everything from the config, decode every sample, write results."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from longspec.build import build_strategy, build_target, resolve_device, resolve_dtype
from longspec.data.sample import split_fitting
from longspec.decoding.sampling import Generation
from longspec.loading import special_ids
from longspec.metrics import PhaseTimer, environment, summarize
from longspec.results import ResultsLog, write_json_atomic

log = logging.getLogger(__name__)


def job_names() -> dict[str, str]:
    """The chosen option of each config group (model, decode, data, ...)."""
    try:
        return dict(HydraConfig.get().runtime.choices)
    except ValueError:  # not under @hydra.main (tests composing by hand)
        return {}


def job_dir() -> Path:
    try:
        return Path(HydraConfig.get().runtime.output_dir)
    except ValueError:
        return Path.cwd()


def run(cfg: DictConfig) -> int:
    """Decode every sample with cfg.decode (and cfg.baseline if set); 0 on success."""
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    torch.manual_seed(cfg.seed)
    target, tokenizer = build_target(cfg, device, dtype)
    pad_id, eos_ids = special_ids(tokenizer, cfg.model)
    gen = Generation(
        max_new_tokens=cfg.generation.max_new_tokens,
        eos_ids=eos_ids,
        temperature=cfg.generation.temperature,
        top_p=cfg.generation.top_p,
        seed=cfg.seed,
    )
    samples = instantiate(cfg.data).load(tokenizer, cfg.model.prompt_format, cfg.model.context)
    budget = cfg.model.context - gen.max_new_tokens
    samples, skipped = split_fitting(samples, budget)
    if not samples:
        raise ValueError(f"no prompt fits model.context - max_new_tokens = {budget} tokens")
    out = job_dir()
    names = job_names()
    tracker = instantiate(cfg.logger)
    tracker.start(OmegaConf.to_container(cfg, resolve=True), names, out)
    try:
        summary = _run_methods(
            cfg, target, tokenizer, samples, skipped, gen, pad_id, out, names, tracker
        )
    except BaseException:
        tracker.finish(None, failed=True)
        raise
    tracker.finish(summary)
    print(one_line(summary))
    return 0


def _run_methods(
    cfg, target, tokenizer, samples, skipped, gen, pad_id, out, names, tracker
) -> dict:
    """Decode with cfg.decode (and cfg.baseline); write and return summary.json."""
    methods = {"": cfg.decode} | ({"baseline": cfg.baseline} if cfg.baseline else {})
    summaries = {}
    for sub, decode_cfg in methods.items():
        strategy = build_strategy(decode_cfg, target, cfg)
        records = decode_all(strategy, target, samples, gen, pad_id, cfg, out / sub, tokenizer)
        if not sub:
            for rec in records:
                tracker.log_sample(rec)
        summaries[sub or "main"] = summarize(records, strategy)
    summary = {
        "model": cfg.model.name,
        "decode": names.get("decode", decode_cfg.get("_target_")),
        "data": names.get("data"),
        **summaries["main"],
        "skipped": len(skipped),
        **environment(target.device),
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    if "baseline" in summaries:
        summary["baseline"] = summaries["baseline"]
        summary["speedup"] = summary["tokens_per_s"] / summaries["baseline"]["tokens_per_s"]
    write_json_atomic(out / "summary.json", summary)
    return summary


def decode_all(strategy, target, samples, gen, pad_id, cfg, out: Path, tokenizer) -> list[dict]:
    """Warm up, then decode samples in batches, appending one record per sample."""
    results = ResultsLog(out / "results.jsonl")
    done = results.finished_ids() if cfg.resume else set()
    if not cfg.resume:
        results.path.unlink(missing_ok=True)
    todo = [s for s in samples if s.id not in done]
    if cfg.warmup and todo:
        warm = replace(gen, max_new_tokens=min(8, gen.max_new_tokens))
        # A short prompt suffices to load kernels and capture graphs; a long one would
        # only add a second prefill to the run's wall time.
        strategy.generate(target, [todo[0].prompt_ids[:128]], warm, pad_id)
    if target.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target.device)
    batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    for index, batch in enumerate(tqdm(batches, desc="samples", unit="batch")):
        timer = PhaseTimer(target.device)
        rows = strategy.generate(target, [s.prompt_ids for s in batch], gen, pad_id, timer)
        for sample, row in zip(batch, rows, strict=True):
            results.append(record(sample, row, timer, tokenizer, index, target))
    return results.read()


def record(sample, row, timer: PhaseTimer, tokenizer, batch_index: int, target) -> dict:
    """The per-sample contract of results.jsonl."""
    decode_s = timer.decode_seconds()
    return {
        "id": sample.id,
        "prompt_tokens": len(sample.prompt_ids),
        "output_ids": row.output_ids,
        "text": tokenizer.decode(row.output_ids, skip_special_tokens=True),
        "new_tokens": row.new_tokens,
        "target_forwards": row.target_forwards,
        "tau": row.tau,
        "accept_lengths": row.accept_lengths,
        "prefill_s": timer.seconds.get("prefill", 0.0),
        "decode_s": decode_s,
        "tokens_per_s": row.new_tokens / decode_s if decode_s > 0 else None,
        "phase_s": dict(timer.seconds),
        "batch": batch_index,
        "peak_memory_bytes": peak_memory(target.device),
    }


def peak_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def one_line(s: dict) -> str:
    line = (
        f"{s['model']} {s['decode']} on {s['data']}: {s['n_samples']} samples, "
        f"{s['new_tokens']} tokens, tau {s['tau']:.2f}, {s['tokens_per_s']:.1f} tokens/s"
    )
    if "speedup" in s:
        line += (
            f", {s['speedup']:.2f}x over baseline ({s['baseline']['tokens_per_s']:.1f} tokens/s)"
        )
    return line
