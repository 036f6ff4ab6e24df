"""Sweep aggregation on synthetic job dirs: paper table, speedups, failures, plots."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from longspec.aggregate import aggregate, main
from longspec.aggregate.jobs import override_params
from longspec.aggregate.markdown import max_overlap
from longspec.aggregate.speedups import varying_keys

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def make_job(
    sweep: Path,
    num: int,
    model: str,
    decode: str,
    task: str,
    tau: float,
    tps: float,
    *,
    extra: dict[str, Any] | None = None,
    decode_cfg: dict[str, Any] | None = None,
    summary: dict[str, Any] | None = None,
    info: dict[str, Any] | None = None,
) -> Path:
    """A finished job dir as the runner + Hydra leave it (summary.json, .hydra/overrides)."""
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"model={model}", f"data.task={task}", f"decode={decode}"]
    overrides += [f"{k}={v}" for k, v in (extra or {}).items()]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    config = {"data": {"task": task}, "decode": decode_cfg or {}}
    body = {"model": model, "decode": decode, "data": "longbench", "n_samples": 2}
    body |= {"tau": tau, "tokens_per_s": tps, "config": config} | (summary or {})
    (job / "summary.json").write_text(json.dumps(body))
    if info:
        (job / "job_info.json").write_text(json.dumps(info))
    return job


def make_failed(sweep: Path, num: int, reason: str | None) -> Path:
    job = sweep / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(["decode=tree", "model=bad"]))
    if reason is not None:
        (job / "error.txt").write_text(f"{reason}\n\nTraceback ...\n")
    return job


@pytest.fixture
def paper_sweep(tmp_path: Path) -> Path:
    """2 models x 2 tasks x {vanilla_hf, vanilla, tree} plus two failed jobs."""
    rows = [
        ("m7", "gov_report", {"vanilla_hf": 5.0, "vanilla": 10.0, "tree": 25.0}),
        ("m7", "lcc", {"vanilla_hf": 6.0, "vanilla": 12.0, "tree": 36.0}),
        ("m13", "gov_report", {"vanilla": 8.0, "tree": 20.0}),
    ]
    num = 0
    for model, task, speeds in rows:
        for decode, tps in speeds.items():
            make_job(tmp_path, num, model, decode, task, 1.0 if decode != "tree" else 3.5, tps)
            num += 1
    make_failed(tmp_path, 90, "RuntimeError: CUDA out of memory")
    make_failed(tmp_path, 91, None)
    return tmp_path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_speedup_over_vanilla_of_same_model_and_task(paper_sweep: Path) -> None:
    report = aggregate(paper_sweep)
    speed = {(j.model, j.task, j.method): j.speedup for j in report.jobs}
    assert speed[("m7", "gov_report", "tree")] == pytest.approx(2.5)
    assert speed[("m7", "gov_report", "vanilla_hf")] == pytest.approx(0.5)
    assert speed[("m7", "lcc", "tree")] == pytest.approx(3.0)
    assert speed[("m13", "gov_report", "tree")] == pytest.approx(2.5)
    assert speed[("m13", "gov_report", "vanilla")] == pytest.approx(1.0)


def test_csv_is_the_paper_layout(paper_sweep: Path) -> None:
    aggregate(paper_sweep)
    rows = read_csv(paper_sweep / "summary.csv")
    assert [(r["model"], r["method"]) for r in rows] == [
        ("m7", "vanilla_hf"),
        ("m7", "vanilla"),
        ("m7", "tree"),
        ("m13", "vanilla"),
        ("m13", "tree"),
    ]
    tree7 = rows[2]
    assert float(tree7["gov_report/tau"]) == 3.5
    assert float(tree7["gov_report/tokens_per_s"]) == 25.0
    assert float(tree7["lcc/speedup"]) == pytest.approx(3.0)
    assert rows[3]["lcc/tau"] == ""  # m13 has no lcc job
    jobs = read_csv(paper_sweep / "jobs.csv")
    assert len(jobs) == 8 and {j["task"] for j in jobs} == {"gov_report", "lcc"}


def test_markdown_table_and_failed_jobs(paper_sweep: Path) -> None:
    report = aggregate(paper_sweep)
    md = (paper_sweep / "summary.md").read_text()
    assert "| model | method | gov_report tau | gov_report tok/s | gov_report speedup |" in md
    assert "| m7 | tree | 3.50 | 25.0 | 2.50x | 3.50 | 36.0 | 3.00x |" in md
    assert "| m13 | tree | 3.50 | 20.0 | 2.50x | - | - | - |" in md
    assert "## Failed jobs" in md
    assert "| 90 | decode=tree model=bad | RuntimeError: CUDA out of memory |" in md
    assert "| 91 | decode=tree model=bad | no summary.json |" in md
    assert {f.path.name for f in report.failures} == {"90", "91"}
    assert "8 finished jobs, 2 failed" in md


def test_plots_are_png(paper_sweep: Path) -> None:
    report = aggregate(paper_sweep)
    png = paper_sweep / "speedup.png"
    assert png in report.files
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert "![speedup](speedup.png)" in (paper_sweep / "summary.md").read_text()
    assert not (paper_sweep / "vs_tree_size.png").exists()  # one tree size only


def test_tree_shape_sweep_labels_and_plot(tmp_path: Path) -> None:
    shapes = [[4], [4, 16], [4, 16, 16]]
    make_job(tmp_path, 0, "m", "vanilla", "lcc", 1.0, 10.0)
    for i, shape in enumerate(shapes, start=1):
        extra = {"decode.tree_shape": json.dumps(shape).replace(" ", "")}
        dcfg = {"tree_shape": shape}
        make_job(tmp_path, i, "m", "tree", "lcc", 1.5 + i, 10.0 + 5 * i, extra=extra,
                 decode_cfg=dcfg)  # fmt: skip
    report = aggregate(tmp_path)
    methods = sorted(j.method for j in report.jobs)
    assert methods == [
        "tree tree_shape=[4,16,16]",
        "tree tree_shape=[4,16]",
        "tree tree_shape=[4]",
        "vanilla",
    ]
    by_method = {j.method: j.speedup for j in report.jobs}
    assert by_method["tree tree_shape=[4,16,16]"] == pytest.approx(2.5)
    assert (tmp_path / "vs_tree_size.png").read_bytes()[:8] == PNG_MAGIC
    assert not (tmp_path / "vs_gamma.png").exists()


def test_gamma_sweep_plot_and_in_job_baseline_speedup(tmp_path: Path) -> None:
    """No vanilla job in the sweep: the job's own baseline speedup is used."""
    for i, g in enumerate([2, 4, 6]):
        make_job(tmp_path, i, "m", "seq", "gov_report", 2.0 + i, 30.0, extra={"decode.gamma": g},
                 decode_cfg={"gamma": g}, summary={"speedup": 1.1 + i})  # fmt: skip
    report = aggregate(tmp_path)
    assert sorted(j.speedup for j in report.jobs) == pytest.approx([1.1, 2.1, 3.1])
    assert (tmp_path / "vs_gamma.png").read_bytes()[:8] == PNG_MAGIC


def test_vanilla_row_matches_other_settings(tmp_path: Path) -> None:
    """Attention ablation: each tree job is compared with the vanilla job of its backend."""
    for i, (decode, attn, tps) in enumerate(
        [("vanilla", "hybrid", 10.0), ("vanilla", "sdpa", 5.0), ("tree", "hybrid", 30.0),
         ("tree", "sdpa", 20.0)]
    ):  # fmt: skip
        make_job(tmp_path, i, "m", decode, "lcc", 1.0, tps, extra={"attention": attn})
    report = aggregate(tmp_path)
    speed = {j.method: j.speedup for j in report.jobs}
    assert speed == pytest.approx(
        {"tree attention=hybrid": 3.0, "tree attention=sdpa": 4.0,
         "vanilla attention=hybrid": 1.0, "vanilla attention=sdpa": 1.0}
    )  # fmt: skip


def test_job_placement_section(tmp_path: Path) -> None:
    spans = [(100.0, 110.0, "0"), (101.0, 111.0, "1"), (110.5, 120.0, "0")]
    for i, (start, end, gpu) in enumerate(spans):
        info = {"start": start, "end": end, "cuda_visible_devices": gpu, "concurrent_jobs": 2}
        make_job(tmp_path, i, "m", "vanilla" if i == 0 else "tree", f"t{i}", 1.0, 1.0, info=info)
    aggregate(tmp_path, plots=False)
    md = (tmp_path / "summary.md").read_text()
    assert "Most jobs running at once: 2." in md
    assert "| 1 | m tree t1 | 1 | 2 | +1.0s | +11.0s |" in md
    jobs = read_csv(tmp_path / "jobs.csv")
    assert [j["cuda_visible_devices"] for j in jobs] == ["0", "1", "0"]


def test_max_overlap() -> None:
    assert max_overlap([(0, 2), (1, 3), (2, 4)]) == 2  # end and start at 2 do not overlap
    assert max_overlap([(0, 10), (1, 2), (1, 3)]) == 3
    assert max_overlap([]) == 0


def test_override_params_and_varying_keys() -> None:
    params = override_params(["+x.y=1", "hydra.job.name=a", "decode=tree", "~z=3"])
    assert params == {"x.y": "1", "decode": "tree", "z": "3"}
    assert varying_keys([{"a": "1", "b": "2"}, {"a": "1", "b": "3"}, {"a": "1"}]) == ["b"]


def test_main_cli(paper_sweep: Path, tmp_path_factory: pytest.TempPathFactory,
                  capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    out = tmp_path_factory.mktemp("out")
    assert main([str(paper_sweep), "--out", str(out), "--no-plots"]) == 0
    assert "| m7 | tree |" in capsys.readouterr().out
    assert (out / "summary.csv").is_file() and not (out / "speedup.png").exists()
    empty = tmp_path_factory.mktemp("empty")
    assert main([str(empty)]) == 1
    assert main([str(empty / "missing")]) == 2


# ------------------------------------------------------------------ end to end (CPU, tiny)

ROOT = Path(__file__).resolve().parents[1]


def test_multirun_tiny_llama_end_to_end(tmp_path: Path, tiny_cache: Path) -> None:
    """``python run.py -m`` over 3 strategies (+3 jobs whose prompts cannot fit): one job dir
    each, the aggregated table and plot, the failures listed, exit status 1."""
    sweep = tmp_path / "sweep"
    cmd = [
        sys.executable, "run.py", "-m", "model=tiny_llama", "decode=vanilla,seq,tree",
        "data=pycode", "data.num_samples=1", "data.prompt_tokens=64,5000",
        "generation.max_new_tokens=8", f"hydra.sweep.dir={sweep}",
    ]  # fmt: skip
    env = os.environ | {"LONGSPEC_CACHE": str(tiny_cache), "WANDB_MODE": "disabled"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # 3 jobs failed by design
    finished = sorted(p.parent.name for p in sweep.glob("*/summary.json"))
    assert len(finished) == 3
    for job in finished:
        assert (sweep / job / "results.jsonl").read_text().count("\n") == 1
    failed = sorted(p.parent.name for p in sweep.glob("*/error.txt"))
    assert len(failed) == 3 and not set(failed) & set(finished)
    rows = read_csv(sweep / "summary.csv")
    assert [(r["model"], r["method"]) for r in rows] == [
        ("tiny_llama", "vanilla"),
        ("tiny_llama", "seq"),
        ("tiny_llama", "tree"),
    ]
    assert float(rows[0]["pycode/speedup"]) == 1.0
    assert all(float(r["pycode/tau"]) >= 1.0 for r in rows)
    md = (sweep / "summary.md").read_text()
    assert "3 finished jobs, 3 failed" in md and "does not fit" in md
    assert (sweep / "speedup.png").read_bytes()[:8] == PNG_MAGIC
