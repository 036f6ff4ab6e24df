"""At-scale decode timings with random weights of real model shapes (no download).

``python -m longspec.bench.scale shape=llama8b contexts=[8192,32768,131072] out=x.json``
builds the model straight on the device, fills the KV cache to each context and times one
vanilla step against its memory floor, one tree round, the verification, the tree attention
of one layer per backend and the cache memory; it prints markdown tables, writes JSON and
draws the round's phases per context beside it (``<out>.png``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from longspec.resolvers import register_resolvers

if TYPE_CHECKING:
    from longspec.attention.base import AttentionBackend

CONF = Path(__file__).resolve().parents[2] / "conf"


def attention_backend(name: str) -> AttentionBackend:
    """conf/attention/<name>.yaml, instantiated."""
    path = CONF / "attention" / f"{name}.yaml"
    if not path.exists():
        options = sorted(p.stem for p in (CONF / "attention").glob("*.yaml"))
        raise ValueError(f"attention_compare: unknown backend {name!r}; options: {options}")
    return instantiate(OmegaConf.load(path))


def check_config(cfg: DictConfig) -> None:
    """Every setting the run reads, before anything is built (one-line ValueError)."""
    from longspec.models.random_weights import SHAPES
    from longspec.rules import is_number, require_choice, require_int, require_levels
    from longspec.validate import validate

    validate(cfg, only={"device", "dtype"})
    require_choice("shape", cfg.shape, sorted(SHAPES))
    contexts = cfg.contexts
    if isinstance(contexts, str) or not contexts:
        raise ValueError(f"contexts must be a non-empty list of token counts, got {contexts!r}")
    for ctx in contexts:
        require_int("contexts", ctx, 1, f" (each of {list(contexts)})")
    for key in ("reps", "bandwidth_mb"):
        require_int(key, cfg[key], 1)
    require_int("warmup", cfg.warmup, 0)
    require_levels("tree_shape", cfg.tree_shape)
    if cfg.draft_vocab is not None:
        require_int("draft_vocab", cfg.draft_vocab, 1, " or null")
    for name, tau in cfg.taus.items():
        if not is_number(tau) or tau < 1:
            raise ValueError(f"taus.{name} must be a number >= 1, got {tau!r}")


def bench(cfg: DictConfig) -> dict:
    """Run every context of cfg; write the JSON after each; print the tables at the end."""
    from longspec.bench.scale_plot import plot_breakdown
    from longspec.bench.scale_run import run

    check_config(cfg)
    out = Path(cfg.out or Path(HydraConfig.get().runtime.output_dir) / "scale.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    config = OmegaConf.to_container(cfg, resolve=True)

    def save(result: dict) -> None:
        out.write_text(json.dumps({**result, "config": config}, indent=2, default=str))

    result = run(cfg, save)
    print(result["tables"])
    print(f"wrote {out}")
    if cfg.plot and (figure := plot_breakdown(result, out.with_suffix(".png"))):
        print(f"wrote {figure}")
    return {**result, "config": config}


register_resolvers()


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="bench_scale")
def main(cfg: DictConfig) -> None:
    from longspec.errors import exit_on_user_error

    exit_on_user_error(lambda c: (bench(c), 0)[1], cfg)


if __name__ == "__main__":
    main()
