"""NaN target logits stop the sample with an error naming it and the decode step.

A tiny Llama whose embedding row of one token is NaN: a prompt or a generated token that
is this token turns every later logit NaN. Checked through the decode loop (greedy and
sampled, vanilla and tree) and through ``run.py`` (exit 2, one line, earlier samples kept).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from longspec.attention import sdpa_attention
from longspec.data.jsonl import JsonlDataset
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.errors import NonFiniteLogits
from longspec.loading import load_pretrained, load_tokenizer
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel
from longspec.models.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[1]
TINY_SPEC = {"model_type": "llama", "hidden_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "intermediate_size": 128,
             "tie_word_embeddings": False}  # fmt: skip


def poisoned(model: torch.nn.Module, token: int) -> torch.nn.Module:
    """A copy of ``model`` whose input embedding of ``token`` is NaN."""
    bad = copy.deepcopy(model)
    with torch.no_grad():
        bad.get_input_embeddings().weight[token] = float("nan")
    return bad


def generate(model, strategy, prompts, gen: Generation) -> list[list[int]]:
    target = TargetModel(model, sdpa_attention)
    return [r.output_ids for r in strategy.generate(target, prompts, gen, pad_id=0)]


def first_new_token(outputs: list[int], avoid: set[int]) -> tuple[int, int]:
    """(token, index) of the first output token not in ``avoid``."""
    for index, tok in enumerate(outputs):
        if tok not in avoid:
            return tok, index
    raise AssertionError(f"every output token is in the avoided set: {outputs}")


PROMPTS = [[5, 17, 33, 42, 8, 99, 120, 7], [11, 64, 23, 250, 31, 77, 140, 9, 13]]
GREEDY = Generation(max_new_tokens=24, eos_ids=())


@pytest.fixture(scope="module")
def clean(tiny_llama) -> tuple[torch.nn.Module, list[list[int]]]:
    model = tiny_llama[0]
    return model, generate(model, Vanilla(), PROMPTS, GREEDY)


def test_nan_mid_decode_names_row_and_step(clean) -> None:
    """Row 1 generates the poisoned token at output index j: round j + 1 (which verifies
    it) stops the batch; row 0 never sees it."""
    model, outputs = clean
    avoid = set(PROMPTS[0]) | set(outputs[0]) | set(PROMPTS[1])
    token, index = first_new_token(outputs[1], avoid)
    with pytest.raises(NonFiniteLogits) as info:
        generate(poisoned(model, token), Vanilla(), PROMPTS, GREEDY)
    err = info.value
    assert (err.row, err.step, err.sample_id) == (1, index + 1, None)
    assert str(err) == f"non-finite logits (NaN or inf) for batch row 1 at decode step {index + 1}"


def test_nan_in_a_tree_round(clean) -> None:
    """The tree may draft the poisoned token before it is committed: the stop comes at the
    latest in the round that commits it."""
    model, outputs = clean
    token, index = first_new_token(outputs[1], set(PROMPTS[1]))
    bad = poisoned(model, token)
    tree = TreeDecoding(random_glide(bad.config, 0, torch.float32, "cpu"), (2, 2))
    with pytest.raises(NonFiniteLogits, match="for batch row 0 at decode step") as info:
        generate(bad, tree, PROMPTS[1:], GREEDY)
    assert 1 <= info.value.step <= index + 1


def test_nan_in_the_prompt_stops_at_step_0_when_sampling(clean) -> None:
    """Sampling from NaN would itself fail (multinomial): the loop raises its own error."""
    model, _ = clean
    token = next(t for t in PROMPTS[1] if t not in PROMPTS[0])
    sampled = Generation(max_new_tokens=8, eos_ids=(), temperature=0.8, seed=3)
    with pytest.raises(NonFiniteLogits, match="for batch row 1 at decode step 0$"):
        generate(poisoned(model, token), Vanilla(), PROMPTS, sampled)


# ---------------------------------------------------------------------------------------------
# Through run.py


PROMPT_TEXTS = ["def add(a, b):\n    return a + b\n", "QXJ = {'k': [1, 2]}\n", "x = 1\n"]
MAX_NEW = 8


def poisoned_run_dir(tmp: Path, data: Path) -> Path:
    """A tiny model dir whose NaN token is in prompt p1 only (not in p0 nor p0's output)."""
    clean = build_tiny(dict(TINY_SPEC), tmp / "clean", seed=0)
    tokenizer = load_tokenizer(str(clean))
    model = load_pretrained(str(clean), dtype=torch.float32, device="cpu")
    p0, p1, _ = (s.prompt_ids for s in JsonlDataset(str(data)).load(tokenizer, "raw"))
    (out0,) = generate(model, Vanilla(), [p0], Generation(MAX_NEW, eos_ids=()))
    token, _ = first_new_token(p1, set(p0) | set(out0))
    bad_dir = tmp / "poisoned"
    poisoned(model, token).save_pretrained(bad_dir)
    tokenizer.save_pretrained(bad_dir)
    return bad_dir


def test_run_py_stops_on_nan_and_keeps_earlier_samples(tmp_path: Path) -> None:
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps({"id": f"p{i}", "prompt": p}) + "\n"
                            for i, p in enumerate(PROMPT_TEXTS)))  # fmt: skip
    model_dir = poisoned_run_dir(tmp_path, data)
    run_dir = tmp_path / "run"
    argv = [sys.executable, str(ROOT / "run.py"), f"hydra.run.dir={run_dir}", "model=tiny_llama",
            "~decode@baseline", "decode=vanilla", "model.target.tiny=null",
            f"model.target.path={model_dir}", "data=jsonl", f"data.path={data}",
            f"generation.max_new_tokens={MAX_NEW}", "warmup=false", "device=cpu"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env |= {"LONGSPEC_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr + proc.stdout
    last = proc.stderr.rstrip().splitlines()[-1]
    assert last.startswith("error: non-finite logits (NaN or inf) for sample p1 at decode step 0")
    assert last.endswith(f"; samples finished before it are in {run_dir / 'results.jsonl'}")
    rows = [json.loads(x) for x in (run_dir / "results.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["p0"] and rows[0]["new_tokens"] > 0
    assert not (run_dir / "summary.json").exists()
