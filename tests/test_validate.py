"""Config validation before any model loads, NaN/id guards, secret redaction, and fuzzing of
config values (through ``validate``) and of the JSON Lines loader (hypothesis)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from omegaconf import DictConfig, OmegaConf

from longspec.config import register
from longspec.data.jsonl import parse_prompt_records
from longspec.errors import InvalidOutput, NonFiniteLogits
from longspec.finite import (
    check_finite,
    check_output_ids,
    finite_rows,
    raise_if_not_finite,
    with_sample_id,
)
from longspec.redact import redact_config, secret_values
from longspec.validate import CHECKS, DEVICE, MAX_TREE_NODES, validate

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
ROOT = CONF_DIR.parent
TINY_MODEL = ["model=tiny_llama", "~decode@baseline"]
TINY = [*TINY_MODEL, "data=pycode", "data.prompt_tokens=96"]
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def composed(*overrides: str) -> DictConfig:
    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.fixture(scope="module")
def base() -> DictConfig:
    """tiny_llama + tree on pycode, valid."""
    return composed(*TINY, "decode=tree")


@pytest.fixture(scope="module")
def seq_base() -> DictConfig:
    return composed(*TINY, "decode=seq")


def with_values(cfg: DictConfig, **values) -> DictConfig:
    """A copy of cfg with dotted keys (``__`` for ``.``) set to raw values."""
    cfg = cfg.copy()
    for key, value in values.items():
        OmegaConf.update(cfg, key.replace("__", "."), value, merge=False)
    return cfg


def error_of(cfg: DictConfig) -> str | None:
    try:
        validate(cfg)
    except ValueError as err:
        message = str(err)
        assert "\n" not in message, message
        return message
    return None


# ---------------------------------------------------------------------------------------------
# Each bad setting, directly


def test_valid_configs_pass(base: DictConfig, seq_base: DictConfig) -> None:
    for cfg in (base, seq_base, composed(*TINY, "decode=magicdec"), composed("decode=vanilla")):
        assert error_of(cfg) is None


def test_checks_are_a_registry() -> None:
    names = [fn.__name__ for fn in CHECKS]
    assert len(names) >= 8 and len(set(names)) == len(names)
    assert {"tree_shape", "generation", "device", "dtype", "data", "draft"} <= set(names)


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"decode__tree_shape": []}, "decode.tree_shape must be a non-empty list"),
        ({"decode__tree_shape": [4, 0, 2]}, "decode.tree_shape level 2 is 0"),
        ({"decode__tree_shape": [4, -1]}, "decode.tree_shape level 2 is -1"),
        ({"decode__tree_shape": [4, 1.5]}, "decode.tree_shape level 2 is 1.5"),
        ({"decode__tree_shape": [4, "a"]}, "decode.tree_shape level 2"),
        ({"decode__tree_shape": 4}, "decode.tree_shape must be a non-empty list"),
        ({"decode__tree_shape": [512, 512, 1]}, f"at most {MAX_TREE_NODES}"),
        ({"generation__max_new_tokens": 0}, "generation.max_new_tokens must be a positive"),
        ({"generation__max_new_tokens": 4096}, "must be below model.context=4096"),
        ({"generation__temperature": -0.1}, "generation.temperature must be >= 0"),
        ({"generation__temperature": math.nan}, "generation.temperature"),
        ({"generation__top_p": 0.0}, "generation.top_p must be in (0, 1]"),
        ({"generation__top_p": 1.5}, "generation.top_p must be in (0, 1]"),
        ({"device": "gpu"}, "device=gpu is not one of auto, cpu, cuda, cuda:N"),
        ({"device": "cuda:x"}, "device=cuda:x is not one of"),
        ({"dtype": "half"}, "dtype=half is not one of auto, float32, float16, bfloat16"),
        ({"model__dtype": "fp8"}, "model.dtype=fp8"),
        ({"batch_size": 0}, "batch_size must be a positive integer"),
        ({"data__num_samples": -1}, "data.num_samples must be a positive integer"),
        ({"data__num_samples": 0}, "data.num_samples must be a positive integer"),
        ({"data__prompt_tokens": 4090}, "data.prompt_tokens=4090 does not fit"),
        ({"data__root": "/no/such/dir"}, "data.root=/no/such/dir does not exist"),
        ({"model__draft__path": "/no/such/draft"}, "model.draft.path=/no/such/draft does not"),
        ({"model__target__tiny": None}, "model.target needs one of path / package / tiny"),
        ({"model__context": 0}, "model.context must be"),
        ({"attention___target_": "longspec.attention.nope.fn"}, "does not exist"),
        ({"attention___target_": "longspec.attention.sdpa.nope"}, "has no 'nope'"),
    ],
)
def test_bad_setting_is_one_line_naming_it(base: DictConfig, values, expected) -> None:
    message = error_of(with_values(base, **values))
    assert message is not None and expected in message, message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"decode__gamma": 0}, "decode.gamma must be a positive integer"),
        ({"decode__gamma": -3}, "decode.gamma"),
        ({"decode__gamma": True}, "decode.gamma"),
        ({"decode__window": 0}, "decode.window must be a positive integer"),
    ],
)
def test_bad_gamma_and_window(seq_base: DictConfig, values, expected) -> None:
    message = error_of(with_values(seq_base, **values))
    assert message is not None and expected in message, message


def test_baseline_is_checked_too() -> None:
    cfg = composed("model=tiny_llama", "decode=tree", "decode@baseline=seq", "baseline.gamma=0")
    assert "baseline.gamma" in (error_of(cfg) or "")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_gpu(base: DictConfig, device: str) -> None:
    message = error_of(with_values(base, device=device))
    assert message and f"device={device} but no CUDA GPU is visible" in message


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({"resources__gpus_per_job": 0}, "resources.gpus_per_job must be a positive integer"),
        ({"resources__gpus_per_job": 2, "device": "cpu"}, "use device=auto or device=cuda"),
    ],
)
def test_bad_resources(base: DictConfig, values, expected) -> None:
    message = error_of(with_values(base, **values))
    assert message is not None and expected in message, message


def test_gpus_per_job_above_the_visible_gpus(base: DictConfig, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert error_of(with_values(base, resources__gpus_per_job=2)) is None
    split_one = error_of(with_values(base, resources__gpus_per_job=2, device="cuda:1"))
    assert split_one and "not device=cuda:1" in split_one
    message = error_of(with_values(base, resources__gpus_per_job=3))
    assert message == (
        "resources.gpus_per_job=3 but this job sees 2 CUDA GPU(s); lower it or run on a node "
        "with more GPUs"
    )


def test_missing_package_names_the_extra(base: DictConfig, monkeypatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "flash_attn" else real(n, *a)
    )
    cfg = with_values(base, attention___target_="flash_attn.flash_attn_interface.flash_attn_func")
    message = error_of(cfg)
    assert message and "flash_attn" in message and "pip install longspec[gpu]" in message


def test_required_value_not_set() -> None:
    message = error_of(composed(*TINY_MODEL, "data=jsonl"))
    assert message and message.startswith("data.path is not set")


def test_data_files(base: DictConfig, tmp_path: Path) -> None:
    jsonl = composed(*TINY_MODEL, "data=jsonl", f"data.path={tmp_path / 'none.jsonl'}")
    assert "data.path=" in error_of(jsonl) and "does not exist" in error_of(jsonl)
    assert "is not a file" in error_of(with_values(jsonl, data__path=str(tmp_path)))
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "a"}\n\n{"prompt": "b", "id": 7}\n')
    assert error_of(with_values(jsonl, data__path=str(good))) is None
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "a"}\n{"prompt": "b"}\n{"prompt": \n')
    assert "line 3 is not valid JSON" in error_of(with_values(jsonl, data__path=str(broken)))
    no_prompt = tmp_path / "np.jsonl"
    no_prompt.write_text('{"prompt": "a"}\n{"text": "b"}\n')
    message = error_of(with_values(jsonl, data__path=str(no_prompt)))
    assert "line 2 has no non-empty string 'prompt'" in message
    longbench = composed(*TINY_MODEL, "data=longbench", f"data.dir={tmp_path}")
    assert "data.task=nope is not one of gov_report" in error_of(
        with_values(longbench, data__task="nope")
    )
    assert "has no gov_report.jsonl" in error_of(longbench)
    (tmp_path / "gov_report.jsonl").write_text('{"context": "x"}\nnot json\n')
    assert "gov_report.jsonl: line 2" in error_of(longbench)


def test_unreadable_data_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that exists but cannot be opened (permission bits, or, for root, which reads
    any file, an open that fails the same way) is named with the reason."""
    path = tmp_path / "secret.jsonl"
    path.write_text('{"prompt": "a"}\n')
    path.chmod(0)
    if os.geteuid() == 0:
        opened = Path.open

        def refuse(self: Path, *args, **kwargs):
            if self == path:
                raise PermissionError(13, "Permission denied", str(self))
            return opened(self, *args, **kwargs)

        monkeypatch.setattr(Path, "open", refuse)
    cfg = composed(*TINY_MODEL, "data=jsonl", f"data.path={path}")
    assert "cannot be read: Permission denied" in error_of(cfg)


def test_draft_that_does_not_fit_names_the_dimension(base: DictConfig) -> None:
    shipped = ROOT / "longspec" / "assets" / "glide-smollm2"
    if not (shipped / "config.json").is_file():
        pytest.skip("no shipped draft")
    cfg = with_values(base, model__draft__path=str(shipped), model__draft__package=None)
    message = error_of(cfg)
    assert message and "hidden_size" in message and "does not fit the target" in message


def test_hub_ids_are_not_checked_locally() -> None:
    assert error_of(composed("model=vicuna7b", "data=pycode")) is None


def test_bad_interpolation_is_one_line(base: DictConfig) -> None:
    cfg = with_values(base, generation__top_p="${oc.env:LONGSPEC_NO_SUCH_VAR_X}")
    message = error_of(cfg)
    assert message and "LONGSPEC_NO_SUCH_VAR_X" in message


# ---------------------------------------------------------------------------------------------
# Fuzzing config values through validate()

WORD = "abcdefghijklmnopqrstuvwxyz0123456789_:. "  # no "$" (interpolation) or "???" (missing)
LEVEL = st.one_of(
    st.integers(-3, 300), st.floats(allow_nan=True), st.text(WORD, max_size=3), st.booleans()
)


@FUZZ
@given(shape=st.lists(LEVEL, max_size=8))
def test_fuzz_tree_shape(base: DictConfig, shape) -> None:
    ok = (
        len(shape) > 0
        and all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
        and sum(shape) <= MAX_TREE_NODES
    )
    message = error_of(with_values(base, decode__tree_shape=shape))
    assert (message is None) == ok, (shape, message)
    if not ok:
        assert "decode.tree_shape" in message


@FUZZ
@given(
    temperature=st.floats(allow_nan=True, allow_infinity=True),
    top_p=st.floats(allow_nan=True, allow_infinity=True),
)
def test_fuzz_sampling_settings(base: DictConfig, temperature: float, top_p: float) -> None:
    message = error_of(
        with_values(base, generation__temperature=temperature, generation__top_p=top_p)
    )
    t_ok = math.isfinite(temperature) and temperature >= 0
    p_ok = 0 < top_p <= 1
    assert (message is None) == (t_ok and p_ok), (temperature, top_p, message)
    if not t_ok:
        assert "generation.temperature" in message
    elif not p_ok:
        assert "generation.top_p" in message


@FUZZ
@given(n=st.integers(-(2**40), 2**40))
def test_fuzz_max_new_tokens(base: DictConfig, n: int) -> None:
    message = error_of(with_values(base, generation__max_new_tokens=n))
    # prompt_tokens=96 in a 4096 context: up to 4000 new tokens fit.
    assert (message is None) == (1 <= n <= 4000), (n, message)
    if message:
        assert "generation.max_new_tokens" in message or "data.prompt_tokens" in message


@FUZZ
@given(gamma=st.one_of(st.integers(-5, 3000), st.floats(allow_nan=True), st.booleans()))
def test_fuzz_gamma(seq_base: DictConfig, gamma) -> None:
    message = error_of(with_values(seq_base, decode__gamma=gamma))
    ok = isinstance(gamma, int) and not isinstance(gamma, bool) and 1 <= gamma <= MAX_TREE_NODES
    assert (message is None) == ok, (gamma, message)
    if message:
        assert "decode.gamma" in message


@FUZZ
@given(device=st.text(alphabet="acdpu:0123x ", max_size=8), dtype=st.text(WORD, max_size=9))
def test_fuzz_device_and_dtype(base: DictConfig, device: str, dtype: str) -> None:
    message = error_of(with_values(base, device=device, dtype=dtype))
    device_ok = device in ("auto", "cpu") or (
        bool(DEVICE.fullmatch(device))
        and torch.cuda.is_available()
        and int(device.partition(":")[2] or 0) < torch.cuda.device_count()
    )
    dtype_ok = dtype in ("auto", "float32", "float16", "bfloat16")
    assert (message is None) == (device_ok and dtype_ok), (device, dtype, message)
    if not device_ok:
        assert f"device={device}" in message
    elif not dtype_ok:
        assert "dtype=" in message


# ---------------------------------------------------------------------------------------------
# Fuzzing the JSON Lines loader


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300))
def test_fuzz_jsonl_bytes_never_crash(data: bytes) -> None:
    """Any bytes: either records or one ValueError that names the file and a line."""
    try:
        records = parse_prompt_records(data, "f.jsonl")
    except ValueError as err:
        assert str(err).startswith("f.jsonl: line "), err
        assert "\n" not in str(err)
    else:
        assert all(isinstance(i, str) and isinstance(p, str) and p for i, p in records)


IDS = st.one_of(st.text(max_size=5), st.integers(-(10**6), 10**6))


@settings(max_examples=150, deadline=None)
@given(
    prompts=st.lists(st.text(min_size=1), min_size=1, max_size=6),
    ids=st.lists(IDS, min_size=6, max_size=6, unique_by=str),
    with_ids=st.booleans(),
    blank=st.lists(st.booleans(), min_size=6, max_size=6),
)
def test_fuzz_jsonl_round_trip(prompts, ids, with_ids: bool, blank) -> None:
    """Valid files (blank lines, extra fields, any text) give back every record in order."""
    lines, want_ids = [], []
    for prompt, sample_id, gap in zip(prompts, ids, blank, strict=False):
        record = {"prompt": prompt, "extra": [1, {"x": None}]}
        if with_ids:
            record["id"] = sample_id
        lines.append(json.dumps(record, ensure_ascii=gap))
        want_ids.append(str(sample_id) if with_ids else str(len(lines)))
        if gap:
            lines.append("  \t ")
    parsed = parse_prompt_records("\n".join(lines).encode(), "f.jsonl")
    assert parsed == list(zip(want_ids, prompts, strict=True))


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 6),
    data=st.data(),
    junk=st.sampled_from(['{"prompt": ', "[1, 2]", '{"prompt": ""}', '{"id": 1}', "\udcff", "nul"]),
)
def test_fuzz_jsonl_broken_line_is_named(n: int, data, junk: str) -> None:
    bad = data.draw(st.integers(1, n))
    lines = [json.dumps({"prompt": f"p{i}", "id": i}) for i in range(1, n + 1)]
    lines[bad - 1] = junk
    raw = "\n".join(lines).encode("utf-8", errors="surrogateescape")
    with pytest.raises(ValueError, match=f"^f.jsonl: line {bad}\\b"):
        parse_prompt_records(raw, "f.jsonl")


# ---------------------------------------------------------------------------------------------
# Guards while decoding


def test_check_finite_passes_finite_logits() -> None:
    check_finite(torch.randn(3, 10), ["a", "b", "c"], step=5)
    check_finite(torch.randn(10), "a", step=0)
    assert finite_rows(torch.randn(3, 4, 5)).tolist() == [True] * 3


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_check_finite_names_sample_and_step(bad: float) -> None:
    logits = torch.randn(3, 2, 10, dtype=torch.float16)
    logits[1, 1, 4] = bad
    with pytest.raises(NonFiniteLogits) as info:
        check_finite(logits, ["a", "b", "c"], step=7)
    err = info.value
    assert (err.sample_id, err.step, err.row) == ("b", 7, 1)
    assert "sample b at decode step 7" in str(err) and "dtype=bfloat16" in str(err)
    assert finite_rows(logits).tolist() == [True, False, True]


def test_check_finite_without_ids_names_the_row_then_the_sample() -> None:
    logits = torch.zeros(2, 5)
    logits[1, 0] = math.nan
    with pytest.raises(NonFiniteLogits) as info:
        check_finite(logits, None, step=3)
    assert "batch row 1 at decode step 3" in str(info.value)
    named = with_sample_id(info.value, "doc/9")
    assert "sample doc/9 at decode step 3" in str(named) and named.sample_id == "doc/9"
    with pytest.raises(NonFiniteLogits, match="sample y at decode step 2"):
        raise_if_not_finite([True, False], ["x", "y"], step=2)


def test_check_output_ids() -> None:
    check_output_ids([0, 5, 99], 100, "s")
    for bad in ([0, 100], [-1], [1.5], [None]):
        with pytest.raises(InvalidOutput, match="sample s: output id"):
            check_output_ids(bad, 100, "s")


# ---------------------------------------------------------------------------------------------
# Secrets


def test_secret_values_by_env_name() -> None:
    env = {
        "WANDB_API_KEY": "w" * 40,
        "HF_TOKEN": "hf_abcdefghijklmnopqrstuvwxyz",
        "MY_SERVICE_SECRET": "s3cr3t-value",
        "SOME_KEY": "1",  # too short to be a credential
        "HOME": "/root/home-dir",
    }
    assert set(secret_values(env)) == {"w" * 40, "hf_abcdefghijklmnopqrstuvwxyz", "s3cr3t-value"}


def test_redact_config_removes_env_secrets_anywhere() -> None:
    env = {"HF_TOKEN": "tok-1234567890", "MY_API_SECRET": "abc-secret-xyz"}
    config = {
        "model": {"target": {"path": "org/model", "hub_token": "anything"}},
        "logger": {"note": "key=abc-secret-xyz;", "tags": ["tok-1234567890"]},
        "generation": {"max_new_tokens": 128},
        "num_key_value_heads": 2,
    }
    out = redact_config(config, env)
    text = json.dumps(out)
    assert "tok-1234567890" not in text and "abc-secret-xyz" not in text
    assert out["model"]["target"] == {"path": "org/model", "hub_token": "<redacted>"}
    assert out["generation"]["max_new_tokens"] == 128 and out["num_key_value_heads"] == 2
    assert config["logger"]["tags"] == ["tok-1234567890"]  # input untouched


@FUZZ
@given(secret=st.text(alphabet="abcdefXYZ0123456789-_", min_size=8, max_size=30), before=st.text())
def test_fuzz_redaction(secret: str, before: str) -> None:
    assume(secret not in "<redacted>")
    out = redact_config({"a": [f"{before}{secret}", {"b": secret}]}, {"X_TOKEN": secret})
    assert secret not in json.dumps(out)


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data=pycode", "data.split=test"], "data.split=test is not one of train, eval"),
        (["data=localtext", "data.kind=poetry"], "data.kind=poetry is not one of prose"),
        (["data=localtext", "data.min_files=0"], "data.min_files must be a positive integer"),
        (["model=smollm2", "decode=tree", "decode.draft_vocab=0"], "decode.draft_vocab must be"),
    ],
)
def test_data_and_draft_vocab_are_checked_before_loading(overrides, expected) -> None:
    """Settings the data loaders and the draft would refuse after the target loaded."""
    message = error_of(composed(*overrides))
    assert message is not None and expected in message, message


def test_draft_vocab_needs_the_ranking_beside_the_draft(tmp_path: Path) -> None:
    """A draft checkpoint without token_counts.json cannot take decode.draft_vocab."""
    import shutil

    cfg = composed("model=smollm2", "decode=tree")
    src = ROOT / cfg.model.draft.package / cfg.model.draft.path  # the shipped draft
    assert error_of(cfg) is None and (src / "token_counts.json").is_file()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(src / name, tmp_path / name)
    moved = with_values(cfg, model__draft__path=str(tmp_path), model__draft__package=None)
    message = error_of(moved)
    assert message is not None and "token_counts.json" in message, message
