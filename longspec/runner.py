"""Run one job: build everything from the config, decode every sample, write results.

Reliability (issue 7): the config is validated before any model loads
(``longspec.validate``); results.jsonl gets one fsynced line per sample; ``resume=true``
continues a run dir (a finished one is only reported again); SIGTERM, GPU out-of-memory and
NaN logits end the run with one line saying what happened and what to do.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig
from tqdm import tqdm

from longspec.decoding.loop import reserve_cache
from longspec.decoding.strategy import announce
from longspec.errors import USER_ERRORS, Interrupted, NonFiniteLogits, OutOfMemory
from longspec.finite import check_output_ids, with_sample_id
from longspec.memory import device_memory, oom_message, peak_memory
from longspec.metrics import PhaseTimer, environment, summarize
from longspec.results import ResultsLog, read_json, write_json_atomic
from longspec.resume import RUN_CONFIG, check_resumable, finished_summary, saved_config
from longspec.validate import validate

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from longspec.data.sample import Sample
    from longspec.decoding.sampling import Generation
    from longspec.decoding.state import RowResult
    from longspec.models.target import TargetModel

log = logging.getLogger(__name__)

JOB_INFO = "job_info.json"  # the launcher's placement of a sweep job (longspec.gpu_lock)


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
    validate(cfg)  # before any model loads
    out = job_dir()
    config = saved_config(cfg)
    if cfg.resume:
        check_resumable(out, config)
        finished = finished_summary(out, config)
        if finished is not None:
            print(f"{one_line(finished)} (already complete: {out / 'summary.json'})")
            return 0
    # From here on a summary.json would describe another run: it is rewritten at the end.
    (out / "summary.json").unlink(missing_ok=True)
    write_json_atomic(out / RUN_CONFIG, config)
    with stop_on_signals(out):
        return _run(cfg, out, config)


def _run(cfg: DictConfig, out: Path, config: dict) -> int:
    """Load the target and the prompts that fit, decode them with the tracker running and
    print the summary's one line."""
    # Imported here (and in the helpers below): transformers takes seconds to import, and a
    # finished run being resumed (every finished job of a resumed sweep) needs none of it.
    from longspec.loading import special_ids

    target, tokenizer = _load_target(cfg)
    pad_id, eos_ids = special_ids(tokenizer, cfg.model)
    job = Job(cfg, target, tokenizer, _generation(cfg, eos_ids), pad_id, out)
    samples = build(cfg.data).load(tokenizer, cfg.model.prompt_format, cfg.model.context)
    samples, skipped = _fitting_samples(samples, cfg, job.gen)
    names = job_names()
    tracker = build(cfg.logger)
    tracker.start(config, names, out)
    try:
        summary = _run_methods(job, samples, skipped, names, tracker, config)
    except BaseException:
        tracker.finish(None, failed=True)
        raise
    tracker.finish(summary)
    print(one_line(summary))
    return 0


@dataclass(frozen=True)
class Job:
    """What every method of a job decodes with."""

    cfg: DictConfig
    target: TargetModel
    tokenizer: PreTrainedTokenizerBase
    gen: Generation
    pad_id: int
    out: Path  # the job dir; a baseline writes into out / "baseline"


def _load_target(cfg: DictConfig) -> tuple[TargetModel, PreTrainedTokenizerBase]:
    """The target and its tokenizer on cfg.device in cfg.dtype (the seed set first); GPU
    out-of-memory while loading becomes a message with the card's memory."""
    from longspec.build import build_target, resolve_device, resolve_dtype

    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    torch.manual_seed(cfg.seed)
    try:
        return build_target(cfg, device, dtype)
    except torch.cuda.OutOfMemoryError as err:
        raise OutOfMemory(
            f"GPU out of memory while loading model {cfg.model.name} in {dtype} on {device}"
            f"{device_memory(device)}; use a smaller model, a GPU with more memory, or free "
            "the GPU from other processes"
        ) from err


def _generation(cfg: DictConfig, eos_ids: tuple[int, ...]) -> Generation:
    """The generation settings of cfg.generation (and the run's seed)."""
    from longspec.decoding.sampling import Generation

    return Generation(
        max_new_tokens=cfg.generation.max_new_tokens,
        eos_ids=eos_ids,
        temperature=cfg.generation.temperature,
        top_p=cfg.generation.top_p,
        seed=cfg.seed,
    )


def _fitting_samples(
    samples: list[Sample], cfg: DictConfig, gen: Generation
) -> tuple[list[Sample], list[Sample]]:
    """(the samples whose prompt fits model.context - max_new_tokens, the skipped ones), with
    a warning naming the skipped; ValueError when none fits."""
    from longspec.data.sample import split_fitting

    budget = cfg.model.context - gen.max_new_tokens
    samples, skipped = split_fitting(samples, budget)
    if skipped:
        _warn_skipped(skipped, budget, cfg, gen)
    if not samples:
        raise ValueError(
            f"no prompt fits: all {len(skipped)} are longer than model.context - "
            f"generation.max_new_tokens = {budget} tokens; lower generation.max_new_tokens "
            "or use shorter prompts"
        )
    return samples, skipped


def _warn_skipped(skipped: list[Sample], budget: int, cfg: DictConfig, gen: Generation) -> None:
    log.warning(
        "skipping %d prompt(s) longer than %d tokens (model.context %d - "
        "generation.max_new_tokens %d): %s",
        len(skipped),
        budget,
        cfg.model.context,
        gen.max_new_tokens,
        ", ".join(f"{s.id} ({len(s.prompt_ids)})" for s in skipped[:5])
        + (", ..." if len(skipped) > 5 else ""),
    )


def build(node: DictConfig) -> Any:
    """``instantiate``, with a user error raised inside the component reported as itself
    (one line) rather than wrapped in Hydra's InstantiationException."""
    try:
        return instantiate(node)
    except InstantiationException as err:
        if isinstance(err.__cause__, USER_ERRORS):
            raise err.__cause__ from None
        raise


def _run_methods(
    job: Job,
    samples: list[Sample],
    skipped: list[Sample],
    names: dict[str, str],
    tracker: Any,
    config: dict,
) -> dict:
    """Decode with cfg.decode (and cfg.baseline); write and return summary.json."""
    from longspec.build import build_strategy

    cfg = job.cfg
    methods = {"": cfg.decode} | ({"baseline": cfg.baseline} if cfg.baseline else {})
    summaries = {}
    for sub, decode_cfg in methods.items():
        strategy = build_strategy(decode_cfg, job.target, cfg)
        records = decode_all(strategy, job, samples, job.out / sub)
        if not sub:
            for rec in records:
                tracker.log_sample(rec)
        summaries[sub or "main"] = summarize(records, strategy)
    summary = {
        "model": cfg.model.name,
        "decode": names.get("decode", cfg.decode.get("_target_")),
        "data": names.get("data"),
        **summaries["main"],
        "skipped": len(skipped),
        **environment(job.target.device),
        "config": config,
    }
    if "baseline" in summaries:
        summary["baseline"] = summaries["baseline"]
        summary["speedup"] = summary["tokens_per_s"] / summaries["baseline"]["tokens_per_s"]
    info = read_json(job.out / JOB_INFO)
    if isinstance(info, dict):  # GPUs, card, concurrent jobs, start (end: on job end)
        summary["job"] = info
    write_json_atomic(job.out / "summary.json", summary)
    return summary


def decode_all(strategy: Any, job: Job, samples: list[Sample], out: Path) -> list[dict]:
    """Warm up, then decode samples in batches, appending one record per sample to
    ``out``/results.jsonl.

    With ``cfg.resume`` the samples already in results.jsonl are kept and not decoded again
    (no warm-up either when none is left). Returns the records of ``samples``, in order.
    """
    cfg, target = job.cfg, job.target
    results, done = _results_log(out / "results.jsonl", cfg.resume)
    todo = [s for s in samples if s.id not in done]
    if done and todo:
        log.info("resume: %d sample(s) done, %d to go in %s", len(done), len(todo), out)
    announce(strategy, [s.prompt_ids for s in todo])  # e.g. tree_shape=auto calibrates on them
    if cfg.warmup and todo:
        warm_up(target, strategy, todo[: cfg.batch_size], todo, job.gen, job.pad_id)
    if target.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(target.device)
    # Batch numbers go on after those of a resumed run (summaries group timings by batch).
    first = 1 + max((r.get("batch", -1) for r in results.read() if r["id"] in done), default=-1)
    batches = [todo[i : i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    for index, batch in enumerate(tqdm(batches, desc="samples", unit="batch"), start=first):
        _decode_batch(strategy, job, batch, index, results)
    by_id = {str(r["id"]): r for r in results.read()}
    return [by_id[s.id] for s in samples if s.id in by_id]


def _results_log(path: Path, resume: bool) -> tuple[ResultsLog, set[str]]:
    """The results file (repaired and kept on resume, else started afresh) and the ids of
    the samples it already finished."""
    results = ResultsLog(path)
    if resume:
        results.repair()
        return results, results.finished_ids()
    results.path.unlink(missing_ok=True)
    return results, set()


def _decode_batch(
    strategy: Any, job: Job, batch: list[Sample], index: int, results: ResultsLog
) -> None:
    """Decode one batch under the decode guard; append a checked record per sample."""
    target, timer = job.target, PhaseTimer(job.target.device)
    with decode_guard(target, strategy, batch, job.gen, kept=results.path):
        rows = strategy.generate(target, [s.prompt_ids for s in batch], job.gen, job.pad_id, timer)
    vocab_size = getattr(target, "vocab_size", None)
    for sample, row in zip(batch, rows, strict=True):
        check_output_ids(row.output_ids, vocab_size, sample.id)
        results.append(record(sample, row, timer, job.tokenizer, index, target))


def warm_up(
    target: TargetModel,
    strategy: Any,
    first: list[Sample],
    todo: list[Sample],
    gen: Generation,
    pad_id: int,
) -> None:
    """Load kernels and capture graphs before timing, in the first batch's shape.

    Short prompts suffice (a long one would only add a prefill to the wall time), but the
    pooled cache of a static target is sized for the longest prompt first, so the timed
    decodes reuse it and the graphs captured here.
    """
    longest = max((s.prompt_ids for s in todo), key=len)
    warm = replace(gen, max_new_tokens=min(8, gen.max_new_tokens))
    with decode_guard(target, strategy, first, gen, "during warm-up: "):
        reserve_cache(target, [longest] * len(first), gen, getattr(strategy, "max_nodes", 0))
        strategy.generate(target, [s.prompt_ids[:128] for s in first], warm, pad_id)


@contextmanager
def decode_guard(
    target: TargetModel,
    strategy: Any,
    batch: list[Sample],
    gen: Generation,
    what: str = "",
    kept: Path | None = None,
) -> Iterator[None]:
    """Name the sample in NaN errors; turn GPU out-of-memory into a message with sizes.

    NaN/inf logits stop the run (the failed batch gets no record; ``kept``, the results
    file, holds the samples finished before it).
    """
    try:
        yield
    except NonFiniteLogits as err:
        raise non_finite_stop(err, batch, target, what, kept) from None
    except torch.cuda.OutOfMemoryError as err:
        message = oom_message(target, strategy, batch, gen, what)
        del err
        if target.device.type == "cuda":
            torch.cuda.empty_cache()
        raise OutOfMemory(message) from None


def non_finite_stop(
    err: NonFiniteLogits,
    batch: list[Sample],
    target: TargetModel,
    what: str = "",
    kept: Path | None = None,
) -> NonFiniteLogits:
    """The loop's error (batch row, step) naming the sample, with a hint and where the
    finished samples are."""
    if err.sample_id is None and err.row < len(batch):
        err = with_sample_id(err, batch[err.row].id)
    message = f"{what}{err}"
    if getattr(target, "dtype", None) == torch.float16 and "dtype=" not in message:
        message += "; try dtype=bfloat16 or dtype=float32"
    if kept is not None:
        message += f"; samples finished before it are in {kept}"
    return NonFiniteLogits(message, sample_id=err.sample_id, step=err.step, row=err.row)


@contextmanager
def stop_on_signals(out: Path) -> Iterator[None]:
    """SIGTERM (schedulers, ``kill``) ends the run with one line; finished samples stay."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        raise Interrupted(
            f"stopped by {signal.Signals(signum).name}; finished samples are in "
            f"{out / 'results.jsonl'}: rerun with resume=true to continue",
            signum,
        )

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---------------------------------------------------------------------------------------------
# Records


def record(
    sample: Sample,
    row: RowResult,
    timer: PhaseTimer,
    tokenizer: PreTrainedTokenizerBase,
    batch_index: int,
    target: TargetModel,
) -> dict:
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
