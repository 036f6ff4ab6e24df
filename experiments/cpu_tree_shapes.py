"""Measure tree shapes against vanilla for SmolLM2 + the shipped draft on this machine.

python experiments/cpu_tree_shapes.py OUT.json [SHAPES]  (greedy, 2k-token pycode eval prompts)

SHAPES: tree shapes separated by ';', e.g. "1,1;1,1,1;2,1,1" (default: the four below).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's longspec

from longspec.bench.common import run_methods  # noqa: E402
from longspec.bench.e2e import CONF, decode_config  # noqa: E402
from longspec.config import register  # noqa: E402

SHAPES = [[1, 1, 1], [2, 2, 2], [3, 3, 3], [4, 4, 4]]


def main(out: str, shapes: list[list[int]]) -> None:
    register()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "bench",
            [
                "data.num_samples=2",
                "data.prompt_tokens=2048",
                "generation.max_new_tokens=128",  # as the default job
                "device=cpu",
            ],
        )
    methods = [("vanilla", decode_config("vanilla", cfg)), ("seq", decode_config("seq", cfg))]
    for shape in shapes:
        node = decode_config("tree", cfg)
        node.tree_shape = shape
        methods.append((f"tree {shape}", node))
    rows, env = run_methods(cfg, methods)
    base = rows[0]["tokens_per_s"]
    for r in rows:
        r.pop("outputs")
        print(
            f"| {r['method']} | tau {r['tau']:.2f} | {r['tokens_per_s']:.2f} tok/s | "
            f"{r['tokens_per_s'] / base:.2f}x |"
        )
    Path(out).write_text(
        json.dumps(
            {"environment": env, "rows": rows, "config": OmegaConf.to_container(cfg)}, indent=2
        )
    )


if __name__ == "__main__":
    given = sys.argv[2].split(";") if len(sys.argv) > 2 else None
    main(sys.argv[1], [[int(n) for n in s.split(",")] for s in given] if given else SHAPES)
