"""Run a module with the split-KV kernel's launch settings changed (GPU experiments).

python experiments/gpu/with_launch.py tma=0 stages=3 -- -m longspec.bench.scale shape=llama8b
Each ``field=value`` before ``--`` sets a field of ``split_kernel.Launch`` (integers; 0/1
for the flags); what follows ``--`` is run as ``python -m MODULE ARGS``.
"""

from __future__ import annotations

import dataclasses
import runpy
import sys

from longspec.attention import split_kernel


def main(argv: list[str]) -> None:
    cut = argv.index("--")
    fields = dict(item.split("=", 1) for item in argv[:cut])
    kinds = {f.name: f.type for f in dataclasses.fields(split_kernel.Launch)}
    cast = {k: bool(int(v)) if kinds[k] == "bool" else int(v) for k, v in fields.items()}
    launch = split_kernel.Launch(**cast)
    split_kernel.LAUNCH = launch
    print("split kernel launch:", dataclasses.asdict(launch), flush=True)
    module, args = argv[cut + 2], argv[cut + 3 :]  # argv[cut + 1] is "-m"
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
