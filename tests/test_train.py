"""GLIDE training: the training forward equals the decode path, LongSpec positions, a CPU run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from longspec.attention import sdpa_attention
from longspec.data.pycode import split_files
from longspec.models.draft import GlideDraft
from longspec.models.glide_io import load_glide, random_glide
from longspec.models.target import TargetModel
from longspec.train.data import TrainData, pack, tokenize_split
from longspec.train.forward import draft_logits, target_pass
from longspec.train.init import init_glide
from longspec.train.positions import (
    anchor_offset_positions,
    cross_mask,
    sample_lags,
    self_mask,
)

REPO = Path(__file__).resolve().parents[1]


def _setup(loaded, n=40, anchors=2, offset=100, seed=3):
    hf, _ = loaded
    target = TargetModel(hf, sdpa_attention)
    layer = random_glide(hf.config, seed, torch.float32, "cpu")
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 200, (1, n), generator=gen)
    idx = torch.arange(n)
    pos = torch.where(idx < anchors, idx, idx + offset)[None]  # anchors, then a jump
    full = target.new_cache(1, n)  # the target's cache holding the whole sequence
    target.forward(ids, pos, full, torch.zeros(1, dtype=torch.long), None)
    return target, layer, ids, pos, full


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("window", [8, 512])
def test_training_forward_matches_decode_path(name, window, request):
    """Training logits at t (lag d) == GlideDraft.absorb + step with the target KV of [0, t-d]."""
    target, layer, ids, pos, cache = _setup(request.getfixturevalue(name))
    n = ids.shape[1]
    out = target_pass(target, ids, pos, keep_logits=False)
    draft = GlideDraft(layer, target, sdpa_attention, window)
    one = torch.ones(1, 1, 1, dtype=torch.bool)
    for d in (1, 2, 4, 5):
        with torch.no_grad():
            train_logits, valid = draft_logits(
                layer, target, ids, pos, out, torch.full_like(ids, d), window
            )
        assert not valid[0, :d].any() and valid[0, d:].all()
        for t in range(d, n, 3):
            cache.lengths[:] = t - d + 1  # the target has committed tokens 0..t-d
            dcache = draft.new_cache(1, n, 1)
            draft.absorb(dcache, ids[:, :t], pos[:, :t], torch.ones(1, t, dtype=torch.bool))
            logits = draft.step(dcache, cache, ids[:, t : t + 1], pos[:, t : t + 1], one)
            torch.testing.assert_close(logits[0, 0], train_logits[0, t], atol=1e-5, rtol=1e-5)


def test_training_forward_matches_chain_rounds(tiny_llama):
    """A chain round (pending tokens at lags 1, 2, 3, ...) matches per-token training lags."""
    window = 8
    target, layer, ids, pos, cache = _setup(tiny_llama, n=36)
    out = target_pass(target, ids, pos, keep_logits=False)
    draft = GlideDraft(layer, target, sdpa_attention, window)
    for start in (5, 17, 30):
        gamma = min(5, ids.shape[1] - start)
        lags = torch.ones_like(ids)
        lags[0, start : start + gamma] = torch.arange(1, gamma + 1)
        with torch.no_grad():
            train_logits, _ = draft_logits(layer, target, ids, pos, out, lags, window)
        cache.lengths[:] = start  # committed 0..start-1; the root sits at index start
        dcache = draft.new_cache(1, ids.shape[1], gamma)
        valid = torch.ones(1, start, dtype=torch.bool)
        draft.absorb(dcache, ids[:, :start], pos[:, :start], valid)
        dcache.clear_pending()
        for k in range(gamma):
            t = start + k
            sees = torch.ones(1, 1, k + 1, dtype=torch.bool)
            logits = draft.step(dcache, cache, ids[:, t : t + 1], pos[:, t : t + 1], sees)
            torch.testing.assert_close(logits[0, 0], train_logits[0, t], atol=1e-5, rtol=1e-5)


def test_anchor_offset_positions():
    gen = torch.Generator().manual_seed(0)
    pos = anchor_offset_positions(256, 64, 4, 1000, gen)
    assert pos.shape == (256, 64) and pos.dtype == torch.long
    seen_s, seen_off = set(), set()
    for row in pos:
        s = int((row == torch.arange(64)).long().cumprod(0).sum())  # leading identity run
        off = int(row[-1]) - 63
        assert 0 <= off <= 1000
        if off > 0:
            assert s <= 4
            torch.testing.assert_close(row[:s], torch.arange(s))
            torch.testing.assert_close(row[s:], torch.arange(s, 64) + off)
            seen_s.add(s)
        assert (row[1:] > row[:-1]).all()  # strictly increasing
        seen_off.add(off)
    assert seen_s == {0, 1, 2, 3, 4}
    assert len(seen_off) > 200 and max(seen_off) <= 1000
    again = anchor_offset_positions(256, 64, 4, 1000, torch.Generator().manual_seed(0))
    assert torch.equal(pos, again)


def test_masks_and_lags():
    pos = torch.tensor([[0, 1, 50, 51, 52, 53]])
    m = self_mask(pos, window=3)[0]
    # query at 52 sees positions in (49, 52]: 50, 51, 52; anchors fall out of the window
    assert m[4].tolist() == [False, False, True, True, True, False]
    assert m[1].tolist() == [True, True, False, False, False, False]
    lags = sample_lags(8, 100, 1, 4, True, torch.Generator().manual_seed(0))
    assert lags.min() == 1 and lags.max() == 4
    per_seq = sample_lags(8, 100, 2, 5, False, torch.Generator().manual_seed(0))
    assert (per_seq == per_seq[:, :1]).all()
    cm, valid = cross_mask(torch.tensor([[1, 1, 2, 3, 1]]))
    assert valid.tolist() == [[False, True, True, True, True]]
    assert cm[0].sum(-1).tolist() == [1, 1, 1, 1, 4]  # sees slots 0..t-lag (row 0: slot 0, invalid)


def test_init_last_layer_copies_weights(tiny_qwen2, tiny_llama):
    for hf, _ in (tiny_qwen2, tiny_llama):
        layer = init_glide(hf, "last_layer", 0)
        src = hf.model.layers[-1]
        for part in ("self_attn", "cross_attn"):
            dst = getattr(layer, part)
            torch.testing.assert_close(dst.q_proj.weight, src.self_attn.q_proj.weight)
            torch.testing.assert_close(dst.o_proj.weight, src.self_attn.o_proj.weight)
            if src.self_attn.k_proj.bias is None:
                assert not dst.k_proj.bias.any()
            else:
                torch.testing.assert_close(dst.k_proj.bias, src.self_attn.k_proj.bias)
        torch.testing.assert_close(layer.mlp.down_proj.weight, src.mlp.down_proj.weight)
        rnd = init_glide(hf, "random", 0)
        assert not rnd.self_attn.q_proj.bias.any()
        assert torch.equal(rnd.mlp.up_proj.weight, init_glide(hf, "random", 0).mlp.up_proj.weight)


def test_data_train_split_only_and_deterministic(tiny_llama):
    _, tok = tiny_llama
    rel, pieces = tokenize_split(tok, "train", max_files=6)
    train_files = {p.name for p in split_files("train")}
    eval_rel = {p.as_posix() for p in split_files("eval")}
    assert not set(rel) & {str(e) for e in eval_rel} and len(rel) == 6
    assert all(Path(r).name in train_files for r in rel)
    a = TrainData(pieces, 32, [0], seed=5)
    b = TrainData(pieces, 32, [0], seed=5)
    assert torch.equal(a.batch(7, 4), b.batch(7, 4))
    assert (a.batch(0, 4)[:, 0] == 0).all() and a.batch(0, 4).shape == (4, 32)
    assert not torch.equal(a.batch(0, 4), TrainData(pieces, 32, [0], seed=6).batch(0, 4))
    assert pack(pieces, 32, []).shape[1] == 32


@pytest.mark.parametrize("train_name", ["default", "cpu_tiny"])
def test_train_configs_compose(conf_dir, train_name):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("train_config", overrides=[f"train={train_name}"])
    t = cfg.train
    assert cfg.model.name == "smollm2" and t.name == train_name
    assert t.batch_size % t.micro_batch == 0 and t.seq_len <= cfg.model.context
    assert 1 <= t.lag_min <= t.lag_max and t.init in ("last_layer", "first_last", "random")
    if train_name == "default":
        assert t.save_path == "longspec/assets/glide-smollm2" and t.save_dtype == "float16"


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("device=gpu", "device=gpu"),
        ("train.target_dtype=fp16", "train.target_dtype"),
        ("train.amp=fp16", "train.amp"),
        ("train.save_dtype=bf16", "train.save_dtype"),
        ("train.init=zeros", "train.init"),
        ("train.micro_batch=0", "train.micro_batch"),
        ("train.micro_batch=3", "train.batch_size=4 must be a multiple"),
        ("train.steps=-1", "train.steps"),
        ("train.lr=0", "train.lr"),
        ("train.distill_weight=2", "train.distill_weight"),
        ("train.betas=[0.9]", "train.betas"),
        ("train.lag_max=0", "train.lag_max"),
        ("train.selfgen.batch=0", "train.selfgen.batch"),
        ("train.selfgen.fast_path=yes", "train.selfgen.fast_path must be true or false"),
        ("train.eval.tree_shape=[2,0]", "train.eval.tree_shape"),
        ("train.eval.sequences=0", "train.eval.sequences"),
        ("resume=true", "resume=true but"),
        ("train.init_from=/no/such/draft", "train.init_from=/no/such/draft does not exist"),
        ("train.init_from=5", "train.init_from must be a draft directory"),
        ("train.init_from=conf", "conf/config.json does not exist"),
    ],
)
def test_train_rejects_bad_settings_before_loading(conf_dir, tmp_path, override, named):
    """One line naming the setting, raised before the target loads (validate_train)."""
    from hydra import compose, initialize_config_dir

    from longspec.train.checks import validate_train

    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("train_config", overrides=_overrides(tmp_path / "w", override))
    with pytest.raises(ValueError, match=re.escape(named)) as err:
        validate_train(cfg)
    assert "\n" not in str(err.value)


def test_resume_refuses_a_changed_recipe(conf_dir, tmp_path):
    """resume=true continues the checkpoint's run: evaluation and logging may change, a
    setting that shapes the weights (lr, data, model) may not."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from longspec.train.checks import validate_train

    def cfg_with(*extra: str):
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose("train_config", overrides=_overrides(tmp_path, *extra))

    (tmp_path / "checkpoint").mkdir()
    saved = OmegaConf.to_yaml(cfg_with(), resolve=True)
    (tmp_path / "checkpoint" / "train_config.yaml").write_text(saved)
    validate_train(cfg_with("resume=true", "train.eval.tau_prompts=0", "train.stop_at=25"))
    for change, named in [
        ("train.lr=0.01", "train.lr=0.01 differs from the checkpoint's 0.003"),
        ("train.selfgen.n=4", "train.selfgen="),
        ("model=tiny_qwen2", "model=tiny_qwen2 differs"),
    ]:
        with pytest.raises(ValueError, match=re.escape(named)):
            validate_train(cfg_with("resume=true", change))


def test_train_cli_bad_setting_is_one_line_and_exit_2(tmp_path, tiny_cache):
    env = {**os.environ, "LONGSPEC_CACHE": str(tiny_cache)}
    cmd = [sys.executable, "train.py", *_overrides(tmp_path, "train.amp=fp16")]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "train.amp=fp16" in proc.stderr and not (tmp_path / "checkpoint").exists()


def _overrides(work_dir: Path, *extra: str) -> list[str]:
    return [
        "model=tiny_llama",
        "train=cpu_tiny",
        f"train.work_dir={work_dir}",
        "train.fixed_batch=true",
        *extra,
    ]


def _train_here(conf_dir: Path, cache: Path, work_dir: Path, *extra: str, monkeypatch) -> None:
    """The training entry in this process (Hydra's compose API, no subprocess)."""
    from hydra import compose, initialize_config_dir

    from longspec.train.loop import train

    monkeypatch.setenv("LONGSPEC_CACHE", str(cache))
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("train_config", overrides=_overrides(work_dir, *extra))
    threads = torch.get_num_threads()  # cpu_tiny sets train.threads=1
    try:
        assert train(cfg) == 0
    finally:
        torch.set_num_threads(threads)


def _train_cli(cache: Path, work_dir: Path, *extra: str) -> None:
    env = {**os.environ, "LONGSPEC_CACHE": str(cache), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "train.py", *_overrides(work_dir, *extra)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_train_cpu_run_and_cli_resume(tmp_path, tiny_cache, tiny_llama, conf_dir, monkeypatch):
    """30 CPU steps: loss falls, checkpoints load with load_glide; stop at 20 + resume through
    ``python train.py ... resume=true`` gives the same weights as the uninterrupted run."""
    hf, _ = tiny_llama
    full = tmp_path / "full"
    _train_here(conf_dir, tiny_cache, full, monkeypatch=monkeypatch)
    metrics = json.loads((full / "final" / "metrics.json").read_text())
    curve = [r["loss"] for r in metrics["loss_curve"]]
    assert metrics["step"] == 30 and len(curve) == 6
    assert curve[-1] < 0.5 * curve[0]
    final = metrics["final"]
    assert {"eval/ce", "eval/agree", "eval/tau_seq4", "eval/tau_tree"} <= set(final)
    # tau counts the tokens a round commits: 1 .. depth + 1 (tree [2,2,2], seq gamma 4)
    assert 1.0 <= final["eval/tau_tree"] <= 4.0 and 1.0 <= final["eval/tau_seq4"] <= 5.0
    for sub in ("final", "checkpoint"):
        layer = load_glide(full / sub, hf.config, torch.float32, "cpu")
        assert layer.self_attn.q_proj.weight.shape == (64, 64)
        assert (full / sub / "train_config.yaml").is_file()
    assert "Loss curve" in (full / "final" / "README.md").read_text()
    state = torch.load(full / "checkpoint" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 30

    part = tmp_path / "part"
    _train_here(conf_dir, tiny_cache, part, "train.stop_at=20", monkeypatch=monkeypatch)
    assert not (part / "final").exists()
    assert torch.load(part / "checkpoint" / "trainer_state.pt", weights_only=True)["step"] == 20
    _train_cli(tiny_cache, part, "resume=true", "logger=wandb", "train.eval.tau_prompts=0")
    resumed = json.loads((part / "final" / "metrics.json").read_text())
    assert [r["step"] for r in resumed["loss_curve"]] == [5, 10, 15, 20, 25, 30]
    a = load_file(full / "final" / "model.safetensors")
    b = load_file(part / "final" / "model.safetensors")
    for key in a:
        torch.testing.assert_close(a[key], b[key], atol=1e-5, rtol=1e-5)
    assert list((part / "wandb").glob("offline-run-*"))


def test_init_from_a_draft_starts_from_its_weights(
    tmp_path, tiny_cache, tiny_llama, conf_dir, monkeypatch
):
    """train.init_from: the layer to train is the saved draft itself (fine-tuning), not an
    init of train.init; the model card says where it started."""
    from hydra import compose, initialize_config_dir

    from longspec.models.glide_io import save_glide
    from longspec.train.loop import Trainer
    from longspec.train.model_card import model_card

    hf, _ = tiny_llama
    source = tmp_path / "draft"
    save_glide(random_glide(hf.config, 5, torch.float32, "cpu"), source, hf.config)
    monkeypatch.setenv("LONGSPEC_CACHE", str(tiny_cache))
    overrides = _overrides(tmp_path / "w", f"train.init_from={source}", "train.selfgen.n=0")
    with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
        cfg = compose("train_config", overrides=overrides)
    threads = torch.get_num_threads()  # cpu_tiny sets train.threads=1
    try:
        trainer = Trainer(cfg)
        trainer.setup()
    finally:
        torch.set_num_threads(threads)
    expected = load_glide(source, hf.config, torch.float32, "cpu").state_dict()
    got = trainer.layer.state_dict()
    assert got.keys() == expected.keys() and trainer.layer.training
    for key, value in expected.items():
        assert torch.equal(got[key], value), key
    assert all(p.requires_grad for p in trainer.layer.parameters())
    assert f"init from the draft `{source}`" in model_card("tiny_llama", cfg, {})


def test_draft_loads_from_pytorch_bin_weights(tmp_path, tiny_llama):
    """A draft dir with *.bin weights instead of safetensors loads (weights-only unpickling)
    to the same tensors; weight_files names what the checks and the loader read."""
    from longspec.models.glide_io import save_glide, weight_files

    hf, _ = tiny_llama
    layer = random_glide(hf.config, 7, torch.float32, "cpu")
    save_glide(layer, tmp_path, hf.config)
    (st,) = weight_files(tmp_path)
    torch.save(load_file(st), tmp_path / "pytorch_model.bin")
    st.unlink()
    assert weight_files(tmp_path) == [tmp_path / "pytorch_model.bin"]
    loaded = load_glide(tmp_path, hf.config, torch.float32, "cpu").state_dict()
    for key, value in layer.state_dict().items():
        assert torch.equal(loaded[key], value), key


def test_init_from_refuses_weightless_dirs_and_its_own_save_path(conf_dir, tmp_path):
    """train.init_from needs weights beside config.json and must not be the export's own
    directory; with both right it passes."""
    from hydra import compose, initialize_config_dir

    from longspec.train.checks import validate_train

    draft = tmp_path / "draft"
    draft.mkdir()
    (draft / "config.json").write_text("{}")

    def cfg_with(*extra: str):
        overrides = _overrides(tmp_path / "w", f"train.init_from={draft}", *extra)
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose("train_config", overrides=overrides)

    with pytest.raises(ValueError, match=re.escape("holds no *.safetensors or *.bin weights")):
        validate_train(cfg_with())
    (draft / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="the export would overwrite the draft it starts from"):
        validate_train(cfg_with(f"train.save_path={draft}"))
    validate_train(cfg_with(f"train.save_path={tmp_path / 'out'}"))


def test_selfgen_rows_end_with_continuations(tiny_llama, tiny_cache, monkeypatch):
    """Random train-stream windows, continued greedily; each row = prefix + the real text up
    to the window's end + the whole continuation; cached; deterministic in the seed."""
    from longspec.decoding.loop import generate
    from longspec.decoding.sampling import Generation
    from longspec.decoding.vanilla import Vanilla
    from longspec.train.loop import decode_target
    from longspec.train.selfgen import selfgen_sequences, window_starts

    monkeypatch.setenv("LONGSPEC_CACHE", str(tiny_cache))
    hf, tok = tiny_llama
    target = TargetModel(hf, sdpa_attention)
    stream = torch.arange(3, 203)  # stand-in for the train stream
    starts = window_starts(200, 50, 15, 17, seed=4)
    assert starts == window_starts(200, 50, 15, 17, seed=4) and len(set(starts)) > 20
    assert min(starts) >= 17 and max(starts) <= 185
    kw = dict(model_name="tiny_llama", eos_ids=(-1,), pad_id=0, n=3, prompt_tokens=16,
              new_tokens=8, batch=2, seed=0, seq_len=32)  # fmt: skip
    rows, generated = selfgen_sequences(target, stream, [1], **kw)
    assert rows.shape == (3, 32) and generated == 24 and (rows[:, 0] == 1).all()
    for row in rows:
        context = row[1:-8]  # 23 consecutive stream ids, ending where the prompt ended
        assert torch.equal(context, torch.arange(int(context[0]), int(context[0]) + 23))
        prompt = [1] + list(range(int(context[-1]) - 14, int(context[-1]) + 1))
        (out,) = generate(target, Vanilla(), [prompt], Generation(8, (-1,)), 0)
        assert row[-8:].tolist() == out.output_ids
    again, _ = selfgen_sequences(target, stream, [1], **kw)  # from the cache
    assert torch.equal(rows, again)
    # train.selfgen.fast_path: the decode target makes its own cache entry; in float32 on a
    # CPU (no CUDA graphs) its greedy continuations are the same ids
    cached = set((tiny_cache / "train_gen").glob("*.pt"))
    fast, _ = selfgen_sequences(decode_target(hf), stream, [1], **kw, tag="fast-path")
    added = set((tiny_cache / "train_gen").glob("*.pt")) - cached
    assert torch.equal(fast, rows) and len(added) == 1
    with pytest.raises(ValueError, match="too short"):
        window_starts(20, 1, 15, 10, seed=0)
