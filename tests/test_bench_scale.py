"""At-scale benchmark: random models built on the device match transformers; the tiny
shape runs end to end on the CPU with the table/JSON layout and constant draft memory."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from hydra import compose, initialize_config_dir
from transformers import AutoModelForCausalLM

from longspec.attention import eager_attention, sdpa_attention
from longspec.bench import scale_plot
from longspec.bench.scale import bench
from longspec.bench.scale_measure import attention_call
from longspec.bench.scale_setup import kv_bytes, long_context
from longspec.models.glide_io import random_glide
from longspec.models.random_weights import random_model, shape_config, weight_bytes
from longspec.models.target import TargetModel
from longspec.resolvers import register_resolvers

CONF = Path(__file__).resolve().parents[1] / "conf"


def test_random_model_matches_transformers() -> None:
    config = shape_config("tiny")
    model = random_model(config, torch.float32, "cpu", seed=1)
    fresh = AutoModelForCausalLM.from_config(config)  # ordinary init: the reference rotary
    assert torch.equal(model.model.rotary_emb.inv_freq, fresh.model.rotary_emb.inv_freq)
    assert model.model.rotary_emb.inv_freq.dtype == torch.float32
    assert torch.equal(model.model.norm.weight, torch.ones(config.hidden_size))
    emb = model.get_input_embeddings().weight
    assert torch.isfinite(emb).all() and 0.01 < float(emb.std()) < 0.03
    ids = torch.randint(0, config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        ref = model(ids, use_cache=False).logits[:, -1].float()  # (1, V)
    target = TargetModel(model, eager_attention)
    ours = target.prefill(ids, torch.tensor([40]), target.new_cache(1, 64))  # (1, V)
    assert (ours - ref).abs().max() <= 1e-4


def test_sizes() -> None:
    llama = shape_config("llama8b")
    assert kv_bytes(llama, 131072, torch.float16) == 16 * 2**30  # 32 layers x 8 heads x 128
    model = random_model(shape_config("tiny"), torch.float32, "cpu")
    total, read = weight_bytes(model)
    assert total - read == model.get_input_embeddings().weight.nbytes


def test_tied_shape_keeps_one_matrix() -> None:
    """smollm2 ties its head to the embedding; a step then reads that matrix once."""
    config = shape_config("smollm2")
    assert config.tie_word_embeddings and not shape_config("llama8b").tie_word_embeddings
    config.num_hidden_layers = 1  # the tie, not the depth, is under test
    model = random_model(config, torch.float32, "cpu")
    assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    total, read = weight_bytes(model)
    assert total == read


@pytest.fixture(scope="module")
def tiny_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("scale") / "scale.json"
    overrides = ["shape=tiny", "contexts=[256,512]", "reps=1", "warmup=1", "device=cpu"]
    register_resolvers()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("bench_scale", overrides=[*overrides, f"out={out}"])
    return bench(cfg), out


def test_tiny_runs_end_to_end(tiny_result: tuple[dict, Path]) -> None:
    result, out = tiny_result
    saved = json.loads(out.read_text())
    assert saved["environment"]["device_name"] and saved["bandwidth_gb_s"] > 0
    assert saved["config"]["shape"] == "tiny" and saved["tables"] == result["tables"]
    rows = saved["rows"]
    assert [r["context"] for r in rows] == [256, 512]
    for r in rows:
        for key in ("vanilla_step_s", "tree_round_s", "verify_s", "draft_s", "floor_s"):
            assert r[key] > 0, key
        assert set(r["attention_layer_s"]) == {"hybrid", "sdpa"}
        assert set(r["projected_speedup"]) == {"paper", "measured"}
        assert r["tree_nodes"] == 69
    for header in ("vanilla step ms", "draft levels ms", "hybrid ms (1 layer)", "projected x"):
        assert header in saved["tables"]
    assert saved["tables"].count("\n| 512 |") == 3  # one row in each of the three tables


def test_draft_vocabulary_shrinks_the_draft_head() -> None:
    overrides = ["shape=tiny", "contexts=[256]", "reps=1", "warmup=1", "device=cpu"]
    register_resolvers()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("bench_scale", overrides=[*overrides, "draft_vocab=40", "out=null"])
    from longspec.bench.scale_run import run

    result = run(cfg)
    assert result["draft_vocab"] == 40 and "The draft scores 40 tokens" in result["tables"]
    assert result["rows"][0]["draft_s"] > 0 and result["rows"][0]["tree_nodes"] == 69


def test_draft_memory_is_constant(tiny_result: tuple[dict, Path]) -> None:
    rows = tiny_result[0]["rows"]
    assert rows[0]["draft_cache_bytes"] == rows[1]["draft_cache_bytes"] > 0
    assert rows[1]["target_kv_bytes"] == 2 * rows[0]["target_kv_bytes"]


def test_context_that_does_not_fit_is_skipped(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    from longspec.bench import scale_run

    monkeypatch.setattr(scale_run, "_no_room", lambda *a: "needs about 99 GiB, 1 GiB free")
    model = SimpleNamespace(config=None, dtype=torch.float16)  # never built: it does not fit
    timing = SimpleNamespace(device=torch.device("cuda"))
    row = scale_run.run_context(None, model, None, {}, 131072, timing)
    assert row == {"context": 131072, "skipped": "needs about 99 GiB, 1 GiB free"}
    assert "context 131072 skipped" in capsys.readouterr().out
    assert scale_run.skipped_lines([row]) == [
        "context 131072 skipped: needs about 99 GiB, 1 GiB free"
    ]


def test_verification_attention_is_timed_as_the_target_runs_it() -> None:
    """The breakdown times the tree's attention with its keys written into the buffer and
    read in one pass (as verification runs it; sdpa reads them there on the CPU): that
    computes what the prefix + tree split of the backend comparison computes, and it does
    read the buffer (values changed there change its output)."""
    backend = sdpa_attention
    hf = random_model(shape_config("tiny"), torch.float32, "cpu")
    draft = random_glide(hf.config, 0, torch.float32, torch.device("cpu"))
    lc = long_context(hf, draft, backend, 256, [2, 2], graphs=False)
    split, args = attention_call(lc, backend, in_flight=False)
    want = split(*args)  # (1, Hq, N+1, D)
    in_flight, same_args = attention_call(lc, backend, in_flight=True)
    assert all(torch.equal(a, b) for a, b in zip(args, same_args, strict=True))
    slots = lc.state.cache.layer(0)[0][0, :, 256 : 256 + args[0].shape[2]]  # (Hkv, N+1, D)
    assert torch.equal(slots, args[1][0])  # the tree's keys sit at slots context + i
    assert (in_flight(*same_args) - want).abs().max() <= 1e-5
    lc.state.cache.layer(0)[1][0, :, 256 : 256 + args[0].shape[2]] += 1.0  # the tree's values
    assert (in_flight(*same_args) - want).abs().max() > 1e-3  # 100x the tolerance above


def test_breakdown_figure_is_written(tiny_result: tuple[dict, Path]) -> None:
    _, out = tiny_result
    figure = out.with_suffix(".png")
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_breakdown_figure_from_a_saved_result(tmp_path: Path, capsys) -> None:
    """The CLI redraws from JSON; nothing measured, a file it cannot read or one that is
    not a scale result is a one-line error and exit 1."""
    row = {"context": 8192, "vanilla_step_s": 0.005, "tree_round_s": 0.01, "draft_s": 0.003,
           "verify_attention_s": 0.002, "verify_other_s": 0.004, "accept_commit_s": 0.001,
           "tree_nodes": 69}  # fmt: skip
    saved = tmp_path / "r.json"
    saved.write_text(json.dumps({"shape": "llama8b", "rows": [row]}))
    assert scale_plot.main([str(saved)]) == 0 and saved.with_suffix(".png").exists()
    skipped = tmp_path / "s.json"
    skipped.write_text(json.dumps({"rows": [{"context": 8192, "skipped": "out of memory"}]}))
    assert scale_plot.main([str(skipped)]) == 1 and not skipped.with_suffix(".png").exists()
    assert scale_plot.main([str(tmp_path / "missing.json")]) == 1
    other = tmp_path / "e2e.json"
    other.write_text(json.dumps({"rows": [{"method": "vanilla"}]}))
    assert scale_plot.main([str(other)]) == 1 and not other.with_suffix(".png").exists()
    err = capsys.readouterr().err
    assert "no measured context" in err and "cannot read" in err
    assert "not a scale benchmark result" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("contexts=[0]", "contexts must be a positive integer"),
        ("contexts=[]", "contexts must be a non-empty list"),
        ("reps=0", "reps must be a positive integer"),
        ("shape=gpt5", "shape=gpt5 is not one of"),
        ("tree_shape=[4,0]", "tree_shape must be a list of positive integers"),
        ("taus.paper=0.5", "taus.paper must be a number >= 1"),
        ("device=gpu", "device=gpu is not one of"),
    ],
)
def test_bad_setting_fails_before_anything_is_built(tmp_path: Path, override, expected) -> None:
    register_resolvers()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("bench_scale", overrides=["device=cpu", override, f"out={tmp_path / 'x'}"])
    with pytest.raises(ValueError, match=expected) as err:
        bench(cfg)
    assert "\n" not in str(err.value) and not (tmp_path / "x").exists()
