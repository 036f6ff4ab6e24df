"""Checkpoints of a training run and the exported draft.

``<work_dir>/checkpoint/`` (the resume point, float32):
  config.json + model.safetensors  (``save_glide``: the published layout)
  trainer_state.pt                 (step, optimizer state, metric history: tensors and plain
                                    Python values only, loaded with ``weights_only=True``)
  train_config.yaml, metrics.json

``train.save_path`` (the shipped draft, ``train.save_dtype``, float16 by default):
  config.json + model.safetensors, train_config.yaml, metrics.json, README.md (model card).

Each directory is written next to its final place and renamed over it, so an interrupted
save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from longspec.models.draft_vocab import save_ranking
from longspec.models.glide import GlideLayer
from longspec.models.glide_io import load_glide, save_glide

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from transformers import PretrainedConfig

STATE_FILE = "trainer_state.pt"


def _write_dir(dest: Path, fill) -> None:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fill(tmp)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _side_files(path: Path, cfg, metrics: dict) -> None:
    (path / "train_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


def save_checkpoint(
    dest: Path,
    layer: GlideLayer,
    target_config: PretrainedConfig,
    cfg: DictConfig,
    metrics: dict,
    state: dict[str, Any],
) -> None:
    def fill(tmp: Path) -> None:
        save_glide(layer, tmp, target_config, extra={"step": state["step"], "dtype": "float32"})
        torch.save(state, tmp / STATE_FILE)
        _side_files(tmp, cfg, metrics)

    _write_dir(dest, fill)


def load_checkpoint(
    src: Path, target_config: PretrainedConfig, device: torch.device | str
) -> tuple[GlideLayer, dict[str, Any]]:
    """(float32 trainable layer, trainer state) of a checkpoint directory."""
    src = Path(src)
    if not (src / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume=true but {src / STATE_FILE} does not exist")
    layer = load_glide(src, target_config, torch.float32, device)
    layer.train().requires_grad_(True)
    state = torch.load(src / STATE_FILE, map_location=device, weights_only=True)
    return layer, state


def export_draft(
    dest: Path,
    layer: GlideLayer,
    target_config: PretrainedConfig,
    cfg: DictConfig,
    metrics: dict,
    dtype: torch.dtype,
    card: str,
    extra: dict | None = None,
    token_counts: torch.Tensor | None = None,
) -> None:
    """The draft in the published layout, with its config, metrics, card and (given the
    train split's token counts) the ranking ``decode.draft_vocab`` uses."""
    shipped = copy.deepcopy(layer).to(device="cpu", dtype=dtype)

    def fill(tmp: Path) -> None:
        save_glide(shipped, tmp, target_config, extra=extra)
        if token_counts is not None:
            save_ranking(tmp, token_counts, "pycode train split")
        _side_files(tmp, cfg, metrics)
        (tmp / "README.md").write_text(card)

    _write_dir(dest, fill)


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(model_name: str, cfg: DictConfig, metrics: dict) -> str:
    """A short README for the exported draft: data, recipe, steps, loss curve, eval metrics."""
    t = cfg.train
    final = metrics.get("final", {})
    data = metrics.get("data", {})
    gen_tokens = data.get("selfgen_tokens")
    selfgen = (
        f", plus {data.get('selfgen_sequences')} sequences ending with {gen_tokens} tokens in "
        f"all that the target generated greedily from random train-split windows of "
        f"{t.selfgen.prompt_tokens} tokens"
        if gen_tokens
        else ""
    )
    lines = [
        f"# GLIDE draft for `{model_name}` (LongSpec)",
        "",
        "One GLIDE decoder layer (self-attention over a 512-token window, cross-attention to",
        "the target's last-layer KV cache, MLP) that uses the target's token embedding and",
        "`lm_head`. Published key layout (REFERENCE.md section 2). Trained by `train.py`.",
        "",
        "## Data",
        "",
        f"- Train: Python standard library files of the pycode **train** split "
        f"({data.get('train_files')} files, {data.get('train_tokens')} tokens per epoch"
        f"{selfgen}).",
        f"- Eval: the pycode **eval** split ({data.get('eval_sequences')} sequences of "
        f"{t.seq_len} tokens); eval files are never trained on.",
        "- Split rule: `sha256(relpath) % 10 == 0` -> eval (longspec/data/pycode.py).",
        "",
        "## Recipe",
        "",
        f"- init `{t.init}`, loss (1 - w) * CE + w * KL(target || draft) with w = "
        f"{t.distill_weight}",
        f"- {t.steps} steps x {t.batch_size} sequences x {t.seq_len} tokens, AdamW lr {t.lr}, "
        f"cosine with {t.warmup_steps} warmup steps, grad clip {t.grad_clip}, seed {t.seed}",
        f"- positions: up to {t.max_anchors} anchor tokens, random offset up to "
        f"{metrics.get('max_offset')}; cross-attention lag {t.lag_min}..{t.lag_max}; "
        f"self-attention window {t.window}",
        f"- reproduce: `python train.py model={model_name} train={t.name}` "
        "(full config in train_config.yaml)",
        "",
        "## Eval (final)",
        "",
        "| metric | value |",
        "|---|---|",
    ]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in final.items()]
    curve = metrics.get("loss_curve", [])
    if curve:
        every = max(len(curve) // 12, 1)
        lines += [
            "",
            "## Loss curve (train, smoothed over the logging interval)",
            "",
            "| step | loss | ce |",
            "|---|---|---|",
        ]
        for row in curve[::every] + ([curve[-1]] if (len(curve) - 1) % every else []):
            lines.append(f"| {row['step']} | {_fmt(row['loss'])} | {_fmt(row['ce'])} |")
    evals = metrics.get("evals", [])
    if evals:
        lines += [
            "",
            "## Eval curve",
            "",
            "| step | eval ce | agree | tau_est_chain4 |",
            "|---|---|---|---|",
        ]
        for row in evals:
            lines.append(
                f"| {row['step']} | {_fmt(row.get('eval/ce'))} | {_fmt(row.get('eval/agree'))} "
                f"| {_fmt(row.get('eval/tau_est_chain4'))} |"
            )
    return "\n".join(lines) + "\n"
