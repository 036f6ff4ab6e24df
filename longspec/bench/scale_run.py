"""Build the random-weight model once, then measure every context that fits."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from longspec.bench.scale_measure import measure_context
from longspec.bench.scale_report import (
    add_derived,
    attention_memory_table,
    breakdown_table,
    main_table,
    skipped_lines,
)
from longspec.bench.scale_setup import long_context, needed_bytes
from longspec.bench.timing import Timing, copy_bandwidth
from longspec.build import resolve_device, resolve_dtype
from longspec.metrics import environment
from longspec.models.glide_io import random_glide
from longspec.models.random_weights import random_model, shape_config, weight_bytes
from longspec.tree import TreeShape


def run(cfg: DictConfig, save: Callable[[dict], None] | None = None) -> dict:
    """All measurements of cfg.shape over cfg.contexts, with the tables as text.

    ``save(result)`` runs after every context, so a crash keeps the contexts before it.
    """
    from longspec.bench.scale import attention_backend

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    timing = Timing(device, cfg.reps, cfg.warmup)
    config = shape_config(cfg.shape)
    start = time.perf_counter()
    hf = random_model(config, dtype, device, cfg.seed)
    draft = random_glide(config, cfg.seed, dtype, device)
    if cfg.draft_vocab is not None:  # random weights: any order of the tokens will do
        gen = torch.Generator().manual_seed(cfg.seed)
        draft.token_ranking = torch.randperm(config.vocab_size, generator=gen)
    print(f"{cfg.shape}: built on {device} in {time.perf_counter() - start:.1f} s", flush=True)
    info = _header_info(cfg, hf, dtype, device, copy_bandwidth(timing, cfg.bandwidth_mb))
    backends = {name: attention_backend(name) for name in cfg.attention_compare}
    for context in cfg.contexts:
        row = run_context(cfg, hf, draft, backends, context, timing)
        if "skipped" not in row:
            add_derived(row, info["weights_read_bytes"], info["bandwidth_gb_s"], info["taus"])
        info["rows"].append(row)
        info["tables"] = tables(info, cfg.plain_attention)
        if save is not None:
            save(info)
    return info


def _header_info(cfg: DictConfig, hf, dtype, device: torch.device, bandwidth: float) -> dict:
    """What every row shares: model, card, bandwidth, weight bytes, taus."""
    total, read = weight_bytes(hf)
    return {
        "shape": cfg.shape,
        "model_config": hf.config.to_dict(),
        "dtype": str(dtype),
        "environment": environment(device),
        "bandwidth_gb_s": bandwidth,
        "weights_bytes": total,
        "weights_read_bytes": read,
        "taus": OmegaConf.to_container(cfg.taus),
        "draft_vocab": cfg.draft_vocab,
        "label": cfg.label,
        "rows": [],
        "tables": "",
    }


def run_context(cfg: DictConfig, hf, draft, backends: dict, context: int, timing: Timing) -> dict:
    """One context's row, or {"context", "skipped": reason} when it does not fit."""
    reason = _no_room(cfg, hf.config, context, timing.device, hf.dtype)
    if reason is None:
        try:
            start = time.perf_counter()
            row = _measure(cfg, hf, draft, backends, context, timing)
            print(f"context {context}: measured in {time.perf_counter() - start:.1f} s")
            return row
        except torch.cuda.OutOfMemoryError as err:
            reason = f"out of memory ({str(err).splitlines()[0]})"
        finally:
            _free(timing.device)
    print(f"note: context {context} skipped: {reason}", flush=True)
    return {"context": context, "skipped": reason}


def _measure(cfg: DictConfig, hf, draft, backends: dict, context: int, timing: Timing) -> dict:
    attention = instantiate(cfg.attention)
    shape, vocab = list(cfg.tree_shape), cfg.draft_vocab
    lc = long_context(hf, draft, attention, context, shape, cfg.window, cfg.graphs, cfg.seed, vocab)
    return measure_context(lc, timing, backends)


def _no_room(cfg: DictConfig, config, context: int, device: torch.device, dtype) -> str | None:
    """Why ``context`` cannot fit the free device memory (None: it fits, or not a GPU)."""
    if device.type != "cuda":
        return None
    nodes = TreeShape(tuple(cfg.tree_shape)).num_nodes + 1
    need = needed_bytes(config, context, dtype, nodes)
    free, _ = torch.cuda.mem_get_info(device)
    if need <= free:
        return None
    return f"needs about {need / 2**30:.1f} GiB, {free / 2**30:.1f} GiB free"


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def tables(info: dict, plain: str) -> str:
    """The printed report: a header line, three tables, skipped contexts."""
    env = info["environment"]
    head = (
        f"{info['shape']} (random weights, {info['dtype']}) on {env['device_name']}: "
        f"weights {info['weights_bytes'] / 1e9:.2f} GB (read per step "
        f"{info['weights_read_bytes'] / 1e9:.2f} GB), copy bandwidth "
        f"{info['bandwidth_gb_s']:.0f} GB/s. Speedups are projected: tau x step / round."
    )
    if info["draft_vocab"] is not None:
        head += f" The draft scores {info['draft_vocab']} tokens (draft_vocab)."
    rows = info["rows"]
    parts = [head, main_table(rows, info["taus"]), breakdown_table(rows)]
    parts += [attention_memory_table(rows, plain), *skipped_lines(rows)]
    return "\n\n".join(parts)
