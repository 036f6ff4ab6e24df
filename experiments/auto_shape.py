"""tree_shape=auto against fixed beam shapes and vanilla: SmolLM2 + the shipped draft.

python experiments/auto_shape.py OUT.json [device=cpu|cuda] [calib=64,256] [hydra overrides ...]

One process, one model load, the same pycode prompts for every method (greedy; each method
warmed up first, see longspec.bench.common). Prints a table (tau, decode tokens/s, speedup
over vanilla, whether the output equals vanilla's) and what auto chose, and writes it all as
JSON. Auto's tuning runs before its first timed decode and is not in its tokens/s; its
duration is reported as tune_s. ``calib=64,256`` adds one auto row per calibration length
(``decode.auto.calib_tokens``). Defaults: 2 prompts of 2048 tokens, 64 new tokens on a CPU
and 256 on a GPU; any override (data.num_samples=3, data.prompt_tokens=4096, ...) wins.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's longspec

from longspec.bench.common import run_methods  # noqa: E402
from longspec.bench.e2e import CONF, decode_config  # noqa: E402
from longspec.config import register  # noqa: E402
from longspec.resolvers import on_device  # noqa: E402

FIXED = [[1, 1, 1], [2, 2, 2], [4, 4, 4], [4, 8, 8, 8], [4, 16, 16, 16, 16]]


def config(overrides: list[str]) -> DictConfig:
    """The bench config: SmolLM2 on pycode, defaults above, then the command line's."""
    register()
    device = next((o.split("=", 1)[1] for o in overrides if o.startswith("device=")), "auto")
    tokens = on_device(device, 256, 64)
    defaults = ["data.num_samples=2", "data.prompt_tokens=2048"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("bench", [*defaults, f"generation.max_new_tokens={tokens}", *overrides])


def methods(cfg: DictConfig, calib: list[int] | None = None) -> list[tuple[str, DictConfig]]:
    """vanilla, each fixed shape, auto (once per calibration length in ``calib``; None:
    the config's)."""
    out = [("vanilla", decode_config("vanilla", cfg))]
    for shape in FIXED:
        node = decode_config("tree", cfg)
        node.tree_shape = shape
        out.append((f"tree {json.dumps(shape).replace(' ', '')}", node))
    for tokens in calib or [None]:
        node = decode_config("tree", cfg)
        node.tree_shape = "auto"
        if tokens is not None:
            node.auto.calib_tokens = tokens
        out.append(("tree auto" + (f" (calib {tokens})" if tokens else ""), node))
    return out


def split_calib(overrides: list[str]) -> tuple[list[str], list[int] | None]:
    """``calib=64,256`` (this script's own setting: one auto row per calibration length)
    out of the Hydra overrides."""
    rest = [o for o in overrides if not o.startswith("calib=")]
    given = [o.split("=", 1)[1] for o in overrides if o.startswith("calib=")]
    return rest, ([int(v) for v in given[-1].split(",")] if given else None)


def table(rows: list[dict]) -> str:
    """Markdown: one row per method; auto's row names its shape."""
    base = rows[0]
    best_fixed = max(r["tokens_per_s"] for r in rows if r["method"].startswith("tree ["))
    lines = [
        "| method | shape | tau | tokens/s | speedup | vs best fixed | same as vanilla |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = [c["shape"] for c in r.get("tree_auto", [])]
        shape = "/".join(json.dumps(s).replace(" ", "") for s in chosen) or "-"
        lines.append(
            f"| {r['method']} | {shape} | {r['tau']:.2f} | {r['tokens_per_s']:.2f} | "
            f"{r['tokens_per_s'] / base['tokens_per_s']:.2f}x | "
            f"{r['tokens_per_s'] / best_fixed:.2f} | {r['outputs'] == base['outputs']} |"
        )
    return "\n".join(lines)


def main(out: str, overrides: list[str]) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    overrides, calib = split_calib(overrides)
    cfg = config(overrides)
    rows, env = run_methods(cfg, methods(cfg, calib))
    text = table(rows)
    print(text)
    for choice in (c for r in rows for c in r.get("tree_auto", [])):
        print(
            f"auto: {choice['shape']} for {choice['prompt_tokens']}-token prompts, expected "
            f"{choice['predicted_tokens_per_round']} tokens/round and "
            f"{choice['predicted_tokens_per_s']} tokens/s; tuned in {choice['tune_s']} s"
        )
        for lap in choice.get("race", []):
            print(
                f"  race: {lap['shape']} predicted {lap['predicted_tokens_per_s']} tokens/s "
                f"(tau {lap['predicted_tokens_per_round']}), measured {lap['tokens_per_s']} "
                f"(tau {lap['tau']})"
            )
    for r in rows:
        r["same_as_vanilla"] = r["outputs"] == rows[0]["outputs"]
    for r in rows:
        r.pop("outputs")
    result = {"environment": env, "rows": rows, "table": text}
    result["config"] = OmegaConf.to_container(cfg, resolve=True)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(result, indent=2, default=str))


if __name__ == "__main__":
    if len(sys.argv) < 2 or "=" in sys.argv[1]:
        sys.exit("usage: python experiments/auto_shape.py OUT.json [device=...] [overrides]")
    main(sys.argv[1], sys.argv[2:])
