"""run.py as a user runs it: one-line summary, results files with the contract's fields."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_FIELDS = {
    "id",
    "output_ids",
    "text",
    "new_tokens",
    "target_forwards",
    "tau",
    "prefill_s",
    "decode_s",
    "tokens_per_s",
}
SUMMARY_FIELDS = {
    "model",
    "decode",
    "data",
    "n_samples",
    "new_tokens",
    "target_forwards",
    "tau",
    "tokens_per_s",
    "decode_s",
    "prefill_s",
    "peak_memory_bytes",
    "device",
    "torch",
    "transformers",
}


def run_cli(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, LONGSPEC_CACHE=str(tmp_path / "cache"))
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={tmp_path / 'run'}", *overrides],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )


@pytest.mark.parametrize("decode", ["vanilla", "vanilla_hf", "tree", "seq", "magicdec"])
def test_run_writes_results(tmp_path, decode):
    proc = run_cli(
        tmp_path,
        "model=tiny_llama",
        f"decode={decode}",
        "data=pycode",
        "data.num_samples=2",
        "data.prompt_tokens=96",
        "generation.max_new_tokens=8",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"tiny_llama {decode} on pycode: 2 samples" in proc.stdout
    rows = [json.loads(x) for x in (tmp_path / "run" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and all(set(r) >= SAMPLE_FIELDS for r in rows)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert set(summary) >= SUMMARY_FIELDS
    assert summary["new_tokens"] == sum(r["new_tokens"] for r in rows)


def test_baseline_gives_speedup(tmp_path):
    proc = run_cli(
        tmp_path,
        "model=tiny_llama",
        "decode=seq",
        "data=pycode",
        "data.num_samples=1",
        "data.prompt_tokens=64",
        "generation.max_new_tokens=8",
        "decode@baseline=vanilla",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["speedup"] > 0 and (tmp_path / "run" / "baseline" / "results.jsonl").exists()
