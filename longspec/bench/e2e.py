"""Compare decode methods end to end on the same prompts, in one process.

``python -m longspec.bench.e2e model=smollm2 methods=[vanilla,tree]`` prints a markdown
table (tau, tokens/s, speedup over ``reference``) and writes the numbers as JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from longspec.config import register

CONF = Path(__file__).resolve().parents[2] / "conf"


def decode_config(name: str, cfg: DictConfig) -> DictConfig:
    """conf/decode/<name>.yaml as a config node, interpolations resolved against cfg."""
    path = CONF / "decode" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in (CONF / "decode").glob("*.yaml"))
        raise ValueError(f"methods: unknown decode method {name!r}; options: {options}")
    scope = OmegaConf.create(
        {"device": cfg.device, "model": cfg.model, "decode": OmegaConf.load(path)}
    )
    return OmegaConf.create(OmegaConf.to_container(scope, resolve=True)["decode"])


def agreement(outputs: list[list[int]], reference: list[list[int]]) -> float:
    """Share of the reference's tokens reproduced before the first difference, per prompt."""
    shares = []
    for out, ref in zip(outputs, reference, strict=True):
        same = next(
            (i for i, (a, b) in enumerate(zip(out, ref, strict=False)) if a != b),
            min(len(out), len(ref)),
        )
        shares.append(same / len(ref) if ref else 1.0)
    return sum(shares) / max(len(shares), 1)


def table(rows: list[dict], reference: str) -> str:
    """Markdown table of the rows, speedup over the reference method's tokens/s and the
    share of the reference's greedy output each method reproduces (1.00 = identical)."""
    ref = next((r for r in rows if r["method"] == reference), None)
    lines = [
        "| method | tau | tokens/s (decode) | tokens/s (end to end) | speedup | new tokens "
        "| same output |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        speed = r["tokens_per_s"] / ref["tokens_per_s"] if ref and ref["tokens_per_s"] else None
        r["speedup"] = speed
        r["same_output"] = agreement(r["outputs"], ref["outputs"]) if ref else None
        same = "-" if r["same_output"] is None else f"{r['same_output']:.2f}"
        lines.append(
            f"| {r['method']} | {r['tau']:.2f} | {r['tokens_per_s']:.1f} | "
            f"{r['end_to_end_tokens_per_s']:.1f} | "
            f"{'-' if speed is None else f'{speed:.2f}x'} | {r['new_tokens']} | {same} |"
        )
    return "\n".join(lines)


def checked_methods(cfg: DictConfig) -> list[tuple[str, DictConfig]]:
    """(name, decode config) of each method, after validating the bench config and every
    method's decode config (one-line ValueError) -- before any model loads."""
    from longspec.validate import DECODE_CHECKS, validate

    validate(cfg)
    if cfg.reference not in cfg.methods:
        raise ValueError(
            f"reference={cfg.reference} is not one of methods={list(cfg.methods)}: the "
            "speedups are over it"
        )
    methods = [(m, decode_config(m, cfg)) for m in cfg.methods]
    for name, node in methods:
        scoped = cfg.copy()
        scoped.decode = node
        try:
            validate(scoped, only=DECODE_CHECKS)
        except ValueError as err:
            raise ValueError(f"methods: {name}: {err}") from None
    return methods


def bench(cfg: DictConfig) -> dict:
    from longspec.bench.common import run_methods

    rows, env = run_methods(cfg, checked_methods(cfg))
    text = table(rows, cfg.reference)
    print(text)
    result = {
        "label": cfg.label,
        "environment": env,
        "rows": rows,
        "table": text,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    out = Path(cfg.out) if cfg.out else run_dir / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str))
    return result


register()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="bench")
def main(cfg: DictConfig) -> None:
    from longspec.errors import exit_on_user_error

    exit_on_user_error(lambda c: (bench(c), 0)[1], cfg)


if __name__ == "__main__":
    main()
