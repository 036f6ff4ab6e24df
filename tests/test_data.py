"""Tests for longspec.data: formats, loaders, filters and the data configs (CPU, seconds)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import hydra.utils
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from longspec.data import (
    PROMPT_FORMATS,
    Aime24Dataset,
    JsonlDataset,
    LongBenchDataset,
    PyCodeDataset,
    Sample,
    build_sample,
    convert_longbench,
    get_prompt_format,
    split_files,
    split_fitting,
)
from longspec.data.jsonl import parse_prompt_records
from longspec.data.localtext import LocalTextDataset
from longspec.data.longbench import TASKS, fill_template
from longspec.data.prompts import VICUNA_SYSTEM, special_prefix
from longspec.data.pycode import file_split, stdlib_root

CONF_DIR = Path(__file__).resolve().parents[1] / "conf" / "data"
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TRAIN_TEXTS = [
    "def add(x, y):\n    return x + y\n",
    "class Report:\n    def summary(self):\n        pass\n",
    "You are given a report by a government agency. The meeting transcript says hello.",
    "import os\nfor i in range(10):\n    print(i)\n",
]


def make_tokenizer(chat_template: str | None = CHAT_TEMPLATE) -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE tokenizer that adds BOS, trained here on a few strings."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(TRAIN_TEXTS * 5, trainer)
    bos = tok.token_to_id("<s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", chat_template=chat_template
    )


@pytest.fixture(scope="module")
def tok() -> PreTrainedTokenizerFast:
    return make_tokenizer()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


# --- prompt formats -------------------------------------------------------------------


def test_raw_format_adds_bos_once(tok):
    text, ids = get_prompt_format("raw")(tok, "def add(x, y):")
    assert text == "def add(x, y):"
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1
    assert tok.decode(ids, skip_special_tokens=True) == text


def test_chat_format_uses_template_without_double_bos(tok):
    text, ids = get_prompt_format("chat")(tok, "hello")
    assert text == "<s><|user|>hello\n<|assistant|>"
    assert ids[0] == tok.bos_token_id and ids.count(tok.bos_token_id) == 1


def test_chat_format_without_template_names_the_setting():
    with pytest.raises(ValueError, match="model.prompt_format"):
        get_prompt_format("chat")(make_tokenizer(chat_template=None), "hello")


def test_vicuna_format(tok):
    sample = build_sample("a", "hi", tok, "vicuna")
    assert sample.prompt == f"{VICUNA_SYSTEM} USER: hi ASSISTANT:"
    assert sample.prompt_ids[0] == tok.bos_token_id


def test_unknown_format_lists_allowed_names(tok):
    with pytest.raises(ValueError, match="chat, raw, vicuna"):
        build_sample("a", "hi", tok, "alpaca")
    assert set(PROMPT_FORMATS) == {"raw", "chat", "vicuna"}


def test_special_prefix_is_bos(tok):
    assert special_prefix(tok) == [tok.bos_token_id]


def test_split_fitting_keeps_order_and_counts():
    samples = [Sample(str(n), "", list(range(n))) for n in (3, 9, 5, 10)]
    kept, skipped = split_fitting(samples, budget_tokens=5)
    assert [s.id for s in kept] == ["3", "5"]
    assert [s.id for s in skipped] == ["9", "10"]


# --- jsonl ----------------------------------------------------------------------------


def test_jsonl_good_file(tmp_path, tok):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "a b"}\n\n  \n{"prompt": "c", "id": "x"}\n{"prompt": "d"}\n')
    samples = JsonlDataset(str(path)).load(tok, "raw")
    assert [s.id for s in samples] == ["1", "x", "5"]
    assert samples[0].prompt == "a b"
    assert [s.id for s in JsonlDataset(str(path), num_samples=2).load(tok, "raw")] == ["1", "x"]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ('{"prompt": "a"}\n\n{"prompt": "b"\n', "line 3 is not valid JSON"),
        ('{"prompt": "a"}\n{"id": "b"}\n', "line 2 has no non-empty string 'prompt'"),
        ('{"prompt": 5}\n', "line 1 has no non-empty string 'prompt'"),
        ('["prompt"]\n', "line 1 is not a JSON object"),
        ('{"prompt": "a", "id": 1}\n{"prompt": "b", "id": "1"}\n', "line 2: duplicate id"),
    ],
)
def test_jsonl_bad_lines(tmp_path, tok, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(ValueError, match=match):
        JsonlDataset(str(path)).load(tok, "raw")


def test_jsonl_missing_file_names_path(tmp_path, tok):
    path = tmp_path / "nope.jsonl"
    with pytest.raises(ValueError, match="nope.jsonl"):
        JsonlDataset(str(path)).load(tok, "raw")


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)
JSON_LINES = st.one_of(
    st.binary(max_size=40),
    st.text(max_size=40).map(lambda s: s.encode("utf-8")),
    st.dictionaries(st.sampled_from(["prompt", "id", "x"]), JSON_VALUES, max_size=3).map(
        lambda d: json.dumps(d).encode("utf-8")
    ),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(JSON_LINES, max_size=6))
def test_jsonl_fuzz_only_value_errors(lines):
    try:
        records = parse_prompt_records(b"\n".join(lines), "fuzz.jsonl")
    except ValueError as err:
        assert "\n" not in str(err)  # one-liners
        return
    assert all(isinstance(i, str) and isinstance(p, str) and p for i, p in records)


# --- pycode ---------------------------------------------------------------------------


def test_pycode_split_disjoint_and_stable():
    train, evals = split_files("train"), split_files("eval")
    assert evals and train and not set(train) & set(evals)
    assert split_files("eval") == evals  # stable
    assert 0.03 < len(evals) / (len(train) + len(evals)) < 0.2
    root = stdlib_root()
    for path in evals:
        rel = path.relative_to(root).as_posix()
        assert int(hashlib.sha256(rel.encode()).hexdigest()[:8], 16) % 10 == 0
        assert "test" not in path.relative_to(root).parts and file_split(rel) == "eval"
    with pytest.raises(ValueError, match="data.split"):
        split_files("dev")


def test_pycode_deterministic_exact_length(tok):
    load = PyCodeDataset(prompt_tokens=96, num_samples=3, seed=1).load
    first, again = load(tok, "chat"), load(tok, "raw")  # format ignored: always raw
    assert first == again
    for sample in first:
        assert len(sample.prompt_ids) == 96
        assert sample.prompt_ids[0] == tok.bos_token_id
        assert sample.prompt.startswith("# file: ")
        assert tok.decode(sample.prompt_ids[1:]) == sample.prompt
    other = PyCodeDataset(prompt_tokens=96, num_samples=3, seed=2).load(tok, "raw")
    assert [s.id for s in other] != [s.id for s in first]


def test_pycode_concatenates_short_files(tmp_path, tok):
    for name, body in [("a.py", "x = 1\n"), ("b.py", "y = 2\n"), ("c.py", "z = 3")]:
        assert file_split(name) == "train"
        (tmp_path / name).write_text(body)
    (tmp_path / "test_skip.py").write_text("skip = True\n")
    ds = PyCodeDataset(split="train", prompt_tokens=40, root=str(tmp_path))
    samples = ds.load(tok, "raw")
    assert len(samples) == 3 and all(len(s.prompt_ids) == 40 for s in samples)
    assert all(s.prompt.count("# file: ") >= 2 for s in samples)  # short files are joined
    assert "skip" not in "".join(s.prompt for s in samples)
    with pytest.raises(ValueError, match="longer than the whole pycode corpus"):
        PyCodeDataset(split="train", prompt_tokens=10_000, root=str(tmp_path)).load(tok, "raw")
    with pytest.raises(ValueError, match="no eval files"):
        PyCodeDataset(split="eval", root=str(tmp_path)).load(tok, "raw")


# --- longbench ------------------------------------------------------------------------


def longbench_record(i: int, context: str, query: str = "") -> dict:
    """A record in LongBench's real format."""
    return {
        "input": query,
        "context": context,
        "answers": ["ref"],
        "length": len(context.split()),
        "dataset": "qmsum",
        "language": "en",
        "all_classes": None,
        "_id": f"id{i}",
    }


def test_longbench_templates(tok):
    record = longbench_record(0, "CTX {braces}", "What was said?")
    for task in TASKS:
        text = fill_template(task, record)
        assert "CTX {braces}" in text
    assert fill_template("gov_report", record) == (
        "You are given a report by a government agency. Write a one-page summary of the "
        "report.\n\nReport:\nCTX {braces}\n\nNow, write a one-page summary of the report."
        "\n\nSummary:"
    )
    assert "Query: What was said?" in fill_template("qmsum", record)
    assert fill_template("repobench-p", record).endswith(
        "CTX {braces}What was said?Next line of code:\n"
    )
    with pytest.raises(ValueError, match="gov_report"):
        LongBenchDataset(task="narrativeqa", dir=".")


def test_longbench_length_filter(tmp_path, tok):
    contexts = ["hello " * n for n in (5, 60, 200, 400)]
    write_jsonl(
        tmp_path / "qmsum.jsonl", [longbench_record(i, c, "q?") for i, c in enumerate(contexts)]
    )
    everything = LongBenchDataset("qmsum", str(tmp_path), min_prompt_tokens=0).load(tok, "raw")
    lengths = [len(s.prompt_ids) for s in everything]
    assert lengths == sorted(lengths) and len(set(lengths)) == 4
    # Keep only the middle two: min < n <= context_len - reserve.
    ds = LongBenchDataset("qmsum", str(tmp_path), min_prompt_tokens=lengths[0], reserve_tokens=10)
    kept = ds.load(tok, "raw", context_len=lengths[2] + 10)
    assert [s.id for s in kept] == ["qmsum/id1", "qmsum/id2"]
    assert kept[0].prompt.startswith("You are given the transcript of a meeting")
    limited = LongBenchDataset("qmsum", str(tmp_path), 0, 0, num_samples=1).load(tok, "raw", 10**6)
    assert [s.id for s in limited] == ["qmsum/id0"]
    with pytest.raises(ValueError, match="no room"):
        ds.load(tok, "raw", context_len=lengths[0] + 10)


def test_longbench_missing_file_hints_converter(tmp_path, tok):
    with pytest.raises(ValueError, match="convert_longbench --task lcc"):
        LongBenchDataset("lcc", str(tmp_path)).load(tok, "raw", 16384)


def test_convert_longbench_with_mocked_hub(tmp_path, tok, monkeypatch):
    calls = []

    def fake_load_dataset(name, task, split, revision=None):
        calls.append((name, task, split))
        return [longbench_record(i, "code line\n" * 30) for i in range(2)]

    monkeypatch.setattr("datasets.load_dataset", fake_load_dataset)
    assert convert_longbench.main(["--task", "lcc", "--out", str(tmp_path / "lb")]) == 0
    assert calls == [("THUDM/LongBench", "lcc", "test")]
    samples = LongBenchDataset("lcc", str(tmp_path / "lb"), min_prompt_tokens=1).load(tok, "raw")
    assert len(samples) == 2 and samples[0].prompt.endswith("Next line of code:\n")


# --- aime -----------------------------------------------------------------------------


def aime_row(i: int) -> dict:
    return {"id": i, "problem": f"Problem {i}?", "solution": "...", "answer": "7", "url": "u"}


def test_aime_local_export(tmp_path, tok):
    path = write_jsonl(tmp_path / "aime.jsonl", [aime_row(i) for i in (90, 89, 59, 60, 75)])
    samples = Aime24Dataset(path=str(path)).load(tok, "chat")
    assert [s.id for s in samples] == ["aime24/60", "aime24/75", "aime24/89"]
    assert "Problem 60?" in samples[0].prompt and "\\boxed{}" in samples[0].prompt
    assert samples[0].prompt.startswith("<s><|user|>")
    assert len(Aime24Dataset(path=str(path), num_samples=1).load(tok, "raw")) == 1


def test_aime_hub_and_errors(tmp_path, tok, monkeypatch):
    monkeypatch.setattr(
        "datasets.load_dataset", lambda name, split: [aime_row(i) for i in range(90)]
    )
    assert len(Aime24Dataset().load(tok, "raw")) == 30

    def offline(name, split):
        raise ConnectionError("no network")

    monkeypatch.setattr("datasets.load_dataset", offline)
    with pytest.raises(ValueError, match="data.path"):
        Aime24Dataset().load(tok, "raw")
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 61}])
    with pytest.raises(ValueError, match="line 1.*problem"):
        Aime24Dataset(path=str(bad)).load(tok, "raw")


# --- configs --------------------------------------------------------------------------

REQUIRED_FIELDS = {
    "jsonl": {"path": "prompts.jsonl"},
    "pycode": {},
    "longbench": {"dir": "longbench"},
    "aime24": {},
    "localtext": {},
}
CLASSES = {
    "jsonl": JsonlDataset,
    "pycode": PyCodeDataset,
    "longbench": LongBenchDataset,
    "aime24": Aime24Dataset,
    "localtext": LocalTextDataset,
}


def test_every_data_config_is_covered():
    assert {p.stem for p in CONF_DIR.glob("*.yaml")} == set(CLASSES)


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_data_config_instantiates(name):
    cfg = OmegaConf.load(CONF_DIR / f"{name}.yaml")
    cfg = OmegaConf.merge(cfg, REQUIRED_FIELDS[name])
    # pycode and localtext default to a few prompts; the others load everything.
    assert cfg.num_samples == (2 if name in ("pycode", "localtext") else None)
    dataset = hydra.utils.instantiate(cfg)
    assert isinstance(dataset, CLASSES[name])
    assert callable(dataset.load)
