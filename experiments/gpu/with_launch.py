"""Run a module with the split-KV kernel's launch settings changed (GPU experiments).

python experiments/gpu/with_launch.py stages=2 step_stages=2 -- -m longspec.bench.scale shape=tiny
Each ``field=value`` before ``--`` sets a field of ``split_kernel.Launch`` (integers; 0/1
for ``rows_first``); what follows ``-- -m`` is run as ``python -m MODULE ARGS``.
"""

from __future__ import annotations

import dataclasses
import runpy
import sys

from longspec.attention import split_kernel

USAGE = "usage: with_launch.py FIELD=VALUE ... -- -m MODULE [ARGS ...]"


def main(argv: list[str]) -> None:
    cut = argv.index("--") if "--" in argv else len(argv)
    if argv[cut + 1 : cut + 2] != ["-m"]:
        sys.exit(USAGE)
    fields = dict(item.split("=", 1) for item in argv[:cut])
    kinds = {f.name: f.type for f in dataclasses.fields(split_kernel.Launch)}
    if unknown := sorted(set(fields) - set(kinds)):
        sys.exit(f"with_launch.py: Launch has no field {unknown}; fields: {sorted(kinds)}")
    cast = {k: bool(int(v)) if kinds[k] == "bool" else int(v) for k, v in fields.items()}
    launch = split_kernel.Launch(**cast)
    split_kernel.LAUNCH = launch
    print("split kernel launch:", dataclasses.asdict(launch), flush=True)
    module, args = argv[cut + 2], argv[cut + 3 :]  # argv[cut + 1] is "-m"
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
