"""The model card (README.md) of an exported draft: data, recipe, eval, loss and eval curves."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig

CURVE_ROWS = 12  # about this many rows of the loss curve


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(model_name: str, cfg: DictConfig, metrics: dict) -> str:
    """A short README for the exported draft: data, recipe, steps, loss curve, eval metrics."""
    lines = _intro(model_name)
    lines += _data(cfg.train, metrics.get("data", {}))
    lines += _recipe(model_name, cfg.train, metrics)
    lines += _final(metrics.get("final", {}))
    lines += _loss_curve(metrics.get("loss_curve", []))
    lines += _eval_curve(metrics.get("evals", []))
    return "\n".join(lines) + "\n"


def _intro(model_name: str) -> list[str]:
    return [
        f"# GLIDE draft for `{model_name}` (LongSpec)",
        "",
        "One GLIDE decoder layer (self-attention over a 512-token window, cross-attention to",
        "the target's last-layer KV cache, MLP) that uses the target's token embedding and",
        "`lm_head`. Published key layout (REFERENCE.md section 2). Trained by `train.py`.",
        "",
    ]


def _data(t: DictConfig, data: dict[str, Any]) -> list[str]:
    gen_tokens = data.get("selfgen_tokens")
    selfgen = (
        f", plus {data.get('selfgen_sequences')} sequences ending with {gen_tokens} tokens in "
        f"all that the target generated greedily from random train-split windows of "
        f"{t.selfgen.prompt_tokens} tokens"
        if gen_tokens
        else ""
    )
    return [
        "## Data",
        "",
        f"- Train: Python standard library files of the pycode **train** split "
        f"({data.get('train_files')} files, {data.get('train_tokens')} tokens per epoch"
        f"{selfgen}).",
        f"- Eval: the pycode **eval** split ({data.get('eval_sequences')} sequences of "
        f"{t.seq_len} tokens); eval files are never trained on.",
        "- Split rule: `sha256(relpath) % 10 == 0` -> eval (longspec/data/pycode.py).",
        "",
    ]


def _recipe(model_name: str, t: DictConfig, metrics: dict) -> list[str]:
    return [
        "## Recipe",
        "",
        f"- init {_init(t)}, loss (1 - w) * CE + w * KL(target || draft) with w = "
        f"{t.distill_weight}",
        f"- {t.steps} steps x {t.batch_size} sequences x {t.seq_len} tokens, AdamW lr {t.lr}, "
        f"cosine with {t.warmup_steps} warmup steps, grad clip {t.grad_clip}, seed {t.seed}",
        f"- positions: up to {t.max_anchors} anchor tokens, random offset up to "
        f"{metrics.get('max_offset')}; cross-attention lag {t.lag_min}..{t.lag_max}; "
        f"self-attention window {t.window}",
        f"- reproduce: `python train.py model={model_name} train={t.name}` "
        "(full config in train_config.yaml)",
        "",
    ]


def _init(t: DictConfig) -> str:
    source = t.get("init_from")
    return f"from the draft `{source}`" if source is not None else f"`{t.init}`"


def _final(final: dict[str, Any]) -> list[str]:
    lines = ["## Eval (final)", "", "| metric | value |", "|---|---|"]
    return lines + [f"| {k} | {_fmt(v)} |" for k, v in final.items()]


def _loss_curve(curve: list[dict[str, Any]]) -> list[str]:
    """About CURVE_ROWS evenly spaced rows of the logged loss, the last row always shown."""
    if not curve:
        return []
    every = max(len(curve) // CURVE_ROWS, 1)
    rows = curve[::every] + ([curve[-1]] if (len(curve) - 1) % every else [])
    lines = ["", "## Loss curve (train, smoothed over the logging interval)", ""]
    lines += ["| step | loss | ce |", "|---|---|---|"]
    return lines + [f"| {r['step']} | {_fmt(r['loss'])} | {_fmt(r['ce'])} |" for r in rows]


def _eval_curve(evals: list[dict[str, Any]]) -> list[str]:
    if not evals:
        return []
    lines = ["", "## Eval curve", "", "| step | eval ce | agree | tau_est_chain4 |"]
    lines.append("|---|---|---|---|")
    return lines + [
        f"| {r['step']} | {_fmt(r.get('eval/ce'))} | {_fmt(r.get('eval/agree'))} "
        f"| {_fmt(r.get('eval/tau_est_chain4'))} |"
        for r in evals
    ]
