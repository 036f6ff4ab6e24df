"""Checks of a composed training config, run before the target loads: each problem is one
line naming the setting (``train.py`` prints it as ``error: ...`` and exits 2)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from longspec.models.glide_io import weight_files
from longspec.rules import (
    is_number,
    readable_dir,
    readable_file,
    require_choice,
    require_int,
    require_levels,
)
from longspec.train.checkpoint import repo_path
from longspec.train.init import INIT_MODES
from longspec.validate import validate

TARGET_DTYPES = ("auto", "float32", "float16", "bfloat16")
AMP_DTYPES = ("auto", "bfloat16", "float16", "none")
SAVE_DTYPES = ("float32", "float16", "bfloat16")


def validate_train(cfg: DictConfig) -> None:
    """Every setting of ``cfg.train`` (and device, model) that training reads; the first
    problem raises a one-line ValueError."""
    validate(cfg, only={"complete", "device", "model_target", "model_context"})
    t = cfg.train
    _choices(t)
    _sizes(t)
    _optimizer(t)
    _positions(t)
    if t.max_offset is None and cfg.model.get("context") is None:
        raise ValueError(
            "train.max_offset=null needs model.context (offsets go to context - seq_len)"
        )
    _evaluation(t.eval)
    if t.get("init_from") is not None and not cfg.resume:  # a resume loads its checkpoint
        _init_from(t)
    if cfg.resume:
        ckpt = Path(str(t.work_dir)).expanduser() / "checkpoint"
        if not ckpt.is_dir():
            raise ValueError(f"resume=true but {ckpt} does not exist: train without resume first")
        _same_run(cfg, ckpt)


# What a resumed run may change: evaluation, logging, saving and when to stop.
RESUME_MAY_CHANGE = frozenset(
    {"eval", "log_every", "save_every", "progress", "threads", "stop_at", "work_dir",
     "save_path", "save_dtype"}
)  # fmt: skip


def _same_run(cfg: DictConfig, ckpt: Path) -> None:
    """A resumed run trains what the checkpoint's run trained: same model, and the same
    value of every train setting that shapes the weights."""
    saved_file = ckpt / "train_config.yaml"
    if not saved_file.is_file():
        return  # a checkpoint from before train_config.yaml was written beside it
    saved = OmegaConf.load(saved_file)
    if saved.model.name != cfg.model.name:
        raise ValueError(
            f"resume=true but model={cfg.model.name} differs from the checkpoint's "
            f"{saved.model.name} ({saved_file})"
        )
    for key in sorted(saved.train):  # a setting added since the checkpoint is not compared
        if key in RESUME_MAY_CHANGE:
            continue
        now, before = _plain(cfg.train.get(key)), _plain(saved.train.get(key))
        if now != before:
            raise ValueError(
                f"resume=true but train.{key}={now} differs from the checkpoint's {before} "
                f"({saved_file}): resume with the same settings, or resume=false to start over"
            )


def _init_from(t: DictConfig) -> None:
    """train.init_from is a draft dir (config.json and weights) that the export will not
    overwrite."""
    if not isinstance(t.init_from, str):
        raise ValueError(f"train.init_from must be a draft directory, got {t.init_from!r}")
    source = readable_dir("train.init_from", repo_path(t.init_from))
    readable_file("train.init_from", source / "config.json")
    if not weight_files(source):
        raise ValueError(f"train.init_from={t.init_from} holds no *.safetensors or *.bin weights")
    if t.save_path is not None and repo_path(t.save_path).resolve() == source.resolve():
        raise ValueError(
            f"train.init_from={t.init_from} is also train.save_path: the export would "
            "overwrite the draft it starts from; set train.save_path to another directory"
        )


def _plain(value: Any) -> Any:
    """A config value resolved to plain Python (lists and dicts too)."""
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _positive(name: str, value: Any, zero_ok: bool = False) -> None:
    """ValueError unless value is a number > 0 (>= 0 with zero_ok)."""
    if not is_number(value) or value < 0 or (value == 0 and not zero_ok):
        bound = "a number >= 0" if zero_ok else "a number > 0"
        raise ValueError(f"{name} must be {bound}, got {value!r}")


def _choices(t: DictConfig) -> None:
    require_choice("train.target_dtype", t.target_dtype, TARGET_DTYPES)
    require_choice("train.amp", t.amp, AMP_DTYPES)
    require_choice("train.save_dtype", t.save_dtype, SAVE_DTYPES)
    require_choice("train.init", t.init, INIT_MODES)


def _sizes(t: DictConfig) -> None:
    for key in ("steps", "batch_size", "micro_batch", "seq_len", "window", "log_every"):
        require_int(f"train.{key}", t[key], 1)
    if t.batch_size % t.micro_batch:
        raise ValueError(
            f"train.batch_size={t.batch_size} must be a multiple of "
            f"train.micro_batch={t.micro_batch}"
        )
    require_int("train.save_every", t.save_every, 0)
    require_int("train.warmup_steps", t.warmup_steps, 0)
    sg = t.selfgen
    require_int("train.selfgen.n", sg.n, 0)
    if not isinstance(sg.get("fast_path", False), bool):
        raise ValueError(f"train.selfgen.fast_path must be true or false, got {sg.fast_path!r}")
    if sg.n:
        for key in ("prompt_tokens", "new_tokens", "batch", "repeat"):
            require_int(f"train.selfgen.{key}", sg[key], 1)
    if t.threads is not None:
        require_int("train.threads", t.threads, 1, " or null")
    if t.max_files is not None:
        require_int("train.max_files", t.max_files, 1, " or null")
    if t.stop_at is not None:
        require_int("train.stop_at", t.stop_at, 1, " or null")


def _optimizer(t: DictConfig) -> None:
    _positive("train.lr", t.lr)
    _positive("train.weight_decay", t.weight_decay, zero_ok=True)
    _positive("train.grad_clip", t.grad_clip, zero_ok=True)
    _positive("train.distill_temperature", t.distill_temperature)
    for key in ("min_lr_ratio", "distill_weight"):
        if not is_number(t[key]) or not 0 <= t[key] <= 1:
            raise ValueError(f"train.{key} must be a number in [0, 1], got {t[key]!r}")
    betas = list(t.betas) if not isinstance(t.betas, str) else None
    if betas is None or len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
        raise ValueError(f"train.betas must be two numbers in [0, 1), got {t.betas!r}")


def _positions(t: DictConfig) -> None:
    require_int("train.max_anchors", t.max_anchors, 0)
    if t.max_offset is not None:
        require_int("train.max_offset", t.max_offset, 0, " or null")
    require_int("train.lag_min", t.lag_min, 1)
    require_int("train.lag_max", t.lag_max, t.lag_min, f" (train.lag_min={t.lag_min})")


def _evaluation(ev: DictConfig) -> None:
    for key in ("every", "tau_prompts"):
        require_int(f"train.eval.{key}", ev[key], 0)
    for key in ("sequences", "batch", "lags"):
        require_int(f"train.eval.{key}", ev[key], 1)
    if ev.tau_prompts:
        for key in ("tau_prompt_tokens", "tau_new_tokens", "gamma"):
            require_int(f"train.eval.{key}", ev[key], 1)
        require_levels("train.eval.tree_shape", ev.tree_shape)
