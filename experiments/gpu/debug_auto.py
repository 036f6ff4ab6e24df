"""Find the op behind tree_shape=auto's device-side assert on CUDA (GPU session 4).

python experiments/gpu/debug_auto.py MODE   with CUDA_LAUNCH_BLOCKING=1
MODE: eager (no CUDA graphs, no fused layers), steps (graphs per step, no whole-round
graph), rounds (as run.py runs it). Runs only the auto method of experiments/auto_shape.py.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import auto_shape  # noqa: E402

import longspec.models.target as target_mod  # noqa: E402
from longspec.bench.common import run_methods  # noqa: E402


def patch(mode: str) -> None:
    if mode == "eager":
        target_mod.GraphCache = lambda: None
    elif mode == "steps":
        init = target_mod.TargetModel.__init__

        def no_round_graphs(self, *args, **kwargs):
            init(self, *args, **kwargs)
            self.fuse_rounds = False

        target_mod.TargetModel.__init__ = no_round_graphs


def main(mode: str) -> None:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    patch(mode)
    cfg = auto_shape.config(["device=cuda", "hydra.run.dir=/tmp/auto_dbg"])
    rows, _ = run_methods(cfg, auto_shape.methods(cfg)[-1:])
    print(mode, "ok:", rows[0]["tau"], rows[0]["tokens_per_s"], rows[0].get("tree_auto"))


if __name__ == "__main__":
    main(sys.argv[1])
