"""Soak test: many samples back to back through the real runner; memory must not grow.

    python experiments/soak.py --out experiments/results/soak_cpu.json            # tiny, CPU
    python experiments/soak.py --model smollm2 --device cuda --out soak_h100.json  # GPU

Writes ``--samples`` prompts of varying length to a temporary JSON Lines file, runs
``longspec.runner.run`` on them (validation, warm-up, results.jsonl, summary.json, as
``run.py`` does) and after each sample's line is written records the process RSS (psutil,
else /proc/self/statm) and, on CUDA, ``torch.cuda.memory_allocated`` / ``memory_reserved``.
Prints first / last / max per series and writes everything as JSON to ``--out``.

``--threads 1`` (the default) pins torch to one CPU thread: on a small shared machine the
tiny model is many times faster that way, and memory does not depend on it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MIB = 1 << 20
WORDS = [
    "def",
    "return",
    "import",
    "class",
    "self",
    "for",
    "while",
    "if",
    "else",
    "yield",
    "lambda",
    "with",
    "async",
    "await",
]


def rss_bytes() -> int:
    """Resident set size of this process."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def write_prompts(
    path: Path, n: int, min_chars: int, max_chars: int, seed: int, same: bool = False
) -> None:
    """n prompts of pseudo-code, lengths spread over [min_chars, max_chars] (``same``: n
    copies of the first, so every sample has the same shapes)."""
    rng = random.Random(seed)
    text = ""
    with path.open("w") as f:
        for i in range(n):
            if not (same and text):
                size = rng.randint(min_chars, max_chars)
                text = ""
                while len(text) < size:
                    text += f"{rng.choice(WORDS)} x{rng.randint(0, 99)} = {rng.random():.3f}\n"
                text = text[:size]
            f.write(json.dumps({"id": f"soak/{i:04d}", "prompt": text}) + "\n")


def stats(series: list[int]) -> dict:
    """first / last / max / min, growth after the first sample, and the trend (bytes per
    sample, least squares over the second half)."""
    if not series:
        return {}
    half = series[len(series) // 2 :]
    n = len(half)
    xs = range(n)
    mean_x, mean_y = (n - 1) / 2, sum(half) / n
    var = sum((x - mean_x) ** 2 for x in xs)
    slope = (
        sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, half, strict=True)) / var
        if var
        else 0.0
    )
    return {
        "first": series[0],
        "last": series[-1],
        "max": max(series),
        "min": min(series),
        "last_minus_first": series[-1] - series[0],
        "max_minus_first": max(series) - series[0],
        "slope_bytes_per_sample_second_half": slope,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--model", default="tiny_llama")
    parser.add_argument("--decode", default="tree")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--min-chars", type=int, default=64)
    parser.add_argument("--max-chars", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0 = default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--same-prompt", action="store_true", help="every sample the same prompt (same shapes)"
    )
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides, e.g. batch_size=2")
    args = parser.parse_args(argv)
    out = Path(args.out).resolve()  # before the run changes the working directory

    import torch
    from hydra import compose, initialize_config_dir

    import longspec.runner as runner
    from longspec.config import register
    from longspec.results import ResultsLog

    if args.threads:
        torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    rss: list[int] = []
    allocated: list[int] = []
    reserved: list[int] = []
    times: list[float] = []
    objects: list[int] = []  # Python objects the garbage collector tracks

    class MeasuredLog(ResultsLog):
        """results.jsonl that samples memory after each sample's line is on disk."""

        def append(self, record: dict) -> None:
            super().append(record)
            if self.path.parent.name == "baseline":
                return
            if cuda:
                torch.cuda.synchronize()
                allocated.append(int(torch.cuda.memory_allocated()))
                reserved.append(int(torch.cuda.memory_reserved()))
            rss.append(rss_bytes())
            objects.append(len(gc.get_objects()))
            times.append(time.perf_counter())

    runner.ResultsLog = MeasuredLog
    register()
    with tempfile.TemporaryDirectory(prefix="longspec-soak-") as tmp:
        tmp_dir = Path(tmp)
        prompts = tmp_dir / "prompts.jsonl"
        write_prompts(
            prompts, args.samples, args.min_chars, args.max_chars, args.seed, args.same_prompt
        )
        overrides = [
            f"model={args.model}",
            f"decode={args.decode}",
            "~decode@baseline",
            "data=jsonl",
            f"data.path={prompts}",
            f"generation.max_new_tokens={args.max_new_tokens}",
            f"device={args.device}",
            *args.overrides,
        ]
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("config", overrides=overrides)
        run_dir = tmp_dir / "run"
        run_dir.mkdir()
        cwd = Path.cwd()
        os.chdir(run_dir)  # outside Hydra the runner writes into the working directory
        try:
            rss_start = rss_bytes()
            start = time.perf_counter()
            runner.run(cfg)
            wall = time.perf_counter() - start
        finally:
            os.chdir(cwd)
        summary = json.loads((run_dir / "summary.json").read_text())

    report = {
        "samples": len(rss),
        "model": args.model,
        "decode": args.decode,
        "device": summary.get("device"),
        "device_name": summary.get("device_name"),
        "threads": torch.get_num_threads(),
        "max_new_tokens": args.max_new_tokens,
        "prompt_chars": [args.min_chars, args.max_chars],
        "same_prompt": args.same_prompt,
        "overrides": overrides,
        "wall_s": wall,
        "tokens_per_s": summary.get("tokens_per_s"),
        "tau": summary.get("tau"),
        "new_tokens": summary.get("new_tokens"),
        "rss_before_run": rss_start,
        "rss": stats(rss),
        "python_objects": stats(objects),
        "cuda_allocated": stats(allocated) if cuda else None,
        "cuda_reserved": stats(reserved) if cuda else None,
        "series": {
            "rss": rss,
            "python_objects": objects,
            "cuda_allocated": allocated,
            "cuda_reserved": reserved,
            "seconds": [t - times[0] for t in times] if times else [],
        },
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")

    print(f"{len(rss)} samples in {wall:.1f} s ({report['tokens_per_s']:.1f} tokens/s decode)")
    for name in ("rss", "cuda_allocated", "cuda_reserved"):
        s = report[name]
        if s:
            print(
                f"{name}: first {s['first'] / MIB:.1f} MiB, last {s['last'] / MIB:.1f} MiB, "
                f"max {s['max'] / MIB:.1f} MiB (last - first {s['last_minus_first'] / MIB:+.2f} "
                f"MiB, trend {s['slope_bytes_per_sample_second_half'] / 1024:+.2f} KiB/sample)"
            )
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
