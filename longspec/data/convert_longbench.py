"""Write LongBench tasks from the Hugging Face Hub to local JSONL files (needs hub access).

    python -m longspec.data.convert_longbench --task gov_report qmsum --out data/longbench

Each task becomes ``<out>/<task>.jsonl``, one LongBench record per line, fields unchanged;
``data=longbench data.dir=<out>`` then reads them offline. ``THUDM/LongBench`` is a
script-based dataset: if your ``datasets`` version refuses scripts, try
``--revision refs/convert/parquet`` (the Hub's parquet export), if the Hub offers one.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from longspec.data.longbench import TASKS, check_task

HF_DATASET = "THUDM/LongBench"


def convert(task: str, out_dir: str | Path, revision: str | None = None) -> Path:
    """Download one task's test split and write it as ``<out_dir>/<task>.jsonl``."""
    import datasets  # slow import; only this command needs it

    check_task(task)
    rows = datasets.load_dataset(HF_DATASET, task, split="test", revision=revision)
    out = Path(out_dir).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{task}.jsonl"
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(dict(row), ensure_ascii=False) + "\n")
    os.replace(tmp, path)  # a reader never sees a half-written file
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--out", required=True, help="output directory (data.dir)")
    parser.add_argument("--revision", default=None, help="dataset revision on the Hub")
    args = parser.parse_args(argv)
    for task in args.task:
        print(f"{task}: wrote {convert(task, args.out, args.revision)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
