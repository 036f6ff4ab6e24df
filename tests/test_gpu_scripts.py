"""The bookkeeping of the GPU scripts (no GPU): packing drafts, picking and tabulating taus."""

from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load

from longspec.models.glide_io import random_glide, save_glide

ROOT = Path(__file__).resolve().parents[1]


def script(rel: str):
    spec = importlib.util.spec_from_file_location(Path(rel).stem, ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_pack_draft_float16(tmp_path, tiny_llama):
    hf, _ = tiny_llama
    src = tmp_path / "checkpoint"
    save_glide(
        random_glide(hf.config, 0, torch.float32, "cpu"), src, hf.config, {"dtype": "float32"}
    )
    (src / "metrics.json").write_text("{}")
    (src / "trainer_state.pt").write_bytes(b"optimizer state")
    script("experiments/gpu/pack_draft.py").pack(src, tmp_path / "d.tar")
    with tarfile.open(tmp_path / "d.tar") as tar:
        assert sorted(tar.getnames()) == ["config.json", "metrics.json", "model.safetensors"]
        state = load(tar.extractfile("model.safetensors").read())
        cfg = json.loads(tar.extractfile("config.json").read())
    assert all(v.dtype == torch.float16 for v in state.values())
    assert cfg["longspec"]["dtype"] == "float16"


def tau_json(path: Path, taus: dict[str, tuple[float, float]]) -> Path:
    results = [
        {"draft": f"/runs/{name}/checkpoint", "rows": [
            {"method": "tree [4, 16]", "tau": tree}, {"method": "seq gamma 4", "tau": seq}]}
        for name, (tree, seq) in taus.items()
    ]  # fmt: skip
    path.write_text(json.dumps({"results": results + [{"draft": "/runs/x/c", "skipped": "no"}]}))
    return path


def test_pick_and_summary(tmp_path):
    res = script("experiments/gpu/phase3_results.py")
    short = tau_json(
        tmp_path / "short.json", {"ce": (2.5, 1.6), "kl": (2.9, 1.7), "gen": (2.9, 1.9)}
    )
    assert res.pick(short) == "gen"  # best tree tau, ties broken by seq tau
    with pytest.raises(SystemExit):
        res.pick(tmp_path / "missing.json")
    run = tmp_path / "runs" / "gen" / "final"
    run.mkdir(parents=True)
    metrics = {"step": 2000, "seconds_per_step": 0.12, "evals": [{"step": 2000, "eval/agree": 0.5}]}
    (run / "metrics.json").write_text(json.dumps(metrics))
    best = tau_json(tmp_path / "best.json", {"gen": (3.4, 2.2)})
    text = res.summary(tmp_path / "s.json", tmp_path / "runs", short, best)
    assert "| gen | 2000 | 0.120 | 0.5000 | 0.0000 | 3.40 | 2.20 |" in text
    saved = json.loads((tmp_path / "s.json").read_text())
    assert saved["gen"]["tau_short"] == {"tree": 2.9, "seq": 1.9}


def test_tau_by_text_settings():
    tau = script("experiments/tau_by_text.py")
    s = tau.settings(["out=x.json", "samples=1", "kinds=[prose]"])
    assert s.samples == 1 and list(s.kinds) == ["prose"] and s.tree_shape == [4, 16, 16, 16, 16]
    with pytest.raises(Exception, match="sample"):
        tau.settings(["sample=3"])
    assert tau.data_overrides("c", s)[:2] == ["data=localtext", "data.kind=c"]
