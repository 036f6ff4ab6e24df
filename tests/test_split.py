"""A target split over several GPUs (``resources.gpus_per_job`` > 1), tested on CPU.

No CPU machine has two GPUs, so: the placement arguments are built from given card sizes;
the per-layer device bookkeeping (KV cache shards, hidden states moved layer to layer) runs
with two distinct CPU device objects (``cpu`` and ``cpu:0``) standing in for two GPUs, and
must decode exactly like the unsplit model.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

import longspec.build as build
import longspec.loading as loading
from longspec.attention import sdpa_attention
from longspec.cache import KVCache, layer_runs
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.sampling import Generation
from longspec.decoding.vanilla import Vanilla
from longspec.models.glide_io import random_glide
from longspec.models.target import TargetModel
from longspec.placement import (
    WEIGHTS_SHARE,
    check_device_map,
    check_fits,
    split_kwargs,
    weights_bytes,
)

GIB = 1 << 30
CUDA = torch.device("cuda")
ONE, TWO = torch.device("cpu"), torch.device("cpu", 0)  # distinct devices, both the CPU


def test_split_kwargs() -> None:
    assert split_kwargs(1, CUDA, [80 * GIB]) == {}
    assert split_kwargs(1, ONE) == {}
    cards = [80 * GIB, 80 * GIB, 40 * GIB]
    assert split_kwargs(3, CUDA, cards) == {
        "device_map": "auto",
        "max_memory": {0: int(80 * GIB * WEIGHTS_SHARE), 1: int(80 * GIB * WEIGHTS_SHARE),
                       2: int(40 * GIB * WEIGHTS_SHARE)},
    }  # fmt: skip
    assert set(split_kwargs(2, CUDA, cards)["max_memory"]) == {0, 1}  # the job's first GPUs
    with pytest.raises(ValueError, match="gpus_per_job=4 but 3 GPU"):
        split_kwargs(4, CUDA, cards)
    with pytest.raises(ValueError, match="needs CUDA GPUs"):
        split_kwargs(2, ONE, cards)


def test_weights_bytes_and_fit(tiny_llama) -> None:
    model = tiny_llama[0]
    params = sum(p.numel() for p in model.parameters())
    assert weights_bytes(model.config, torch.float32) == 4 * params
    assert weights_bytes(model.config, torch.bfloat16) == 2 * params
    check_fits(4 * params, {0: 2 * params, 1: 2 * params})
    with pytest.raises(ValueError, match=r"do not fit in 2 GPU\(s\)"):
        check_fits(4 * params + 1, {0: 2 * params, 1: 2 * params})


def test_check_device_map() -> None:
    check_device_map({"model.embed_tokens": 0, "model.layers.0": 0, "lm_head": "cuda:1"})
    with pytest.raises(ValueError, match="model.layers.7 on cpu"):
        check_device_map({"model.layers.0": 0, "model.layers.7": "cpu", "lm_head": "disk"})


def test_load_target_refuses_a_model_too_large_before_loading(
    monkeypatch, tiny_cache, model_conf
) -> None:
    def never(*args, **kwargs):
        raise AssertionError("from_pretrained must not be reached")

    monkeypatch.setenv("LONGSPEC_CACHE", str(tiny_cache))
    monkeypatch.setattr(loading.AutoModelForCausalLM, "from_pretrained", never)
    spec = model_conf("tiny_llama")
    with pytest.raises(ValueError, match="raise resources.gpus_per_job"):
        loading.load_target(
            spec.target, dtype=torch.float32, device=CUDA, device_map="auto",
            max_memory={0: 1000, 1: 1000},
        )  # fmt: skip


def test_build_target_passes_the_split_placement(monkeypatch) -> None:
    class Stop(Exception):
        pass

    seen = {}

    def fake_load_target(spec, **kw):
        seen.update(kw)
        raise Stop

    monkeypatch.setattr(build, "load_target", fake_load_target)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(
        torch.cuda, "get_device_properties", lambda i: SimpleNamespace(total_memory=141 * GIB)
    )
    cfg = OmegaConf.create(
        {"model": {"target": {}}, "trust_remote_code": False, "resources": {"gpus_per_job": 2}}
    )
    with pytest.raises(Stop):
        build.build_target(cfg, CUDA, torch.float16)
    budget = int(141 * GIB * WEIGHTS_SHARE)
    assert seen["device_map"] == "auto" and seen["max_memory"] == {0: budget, 1: budget}
    cfg.resources.gpus_per_job = 1
    seen.clear()
    with pytest.raises(Stop):
        build.build_target(cfg, CUDA, torch.float16)
    assert "device_map" not in seen and "max_memory" not in seen


# ---------------------------------------------------------------------------------------------
# Per-layer devices


def test_layer_runs() -> None:
    assert layer_runs([ONE, ONE, TWO, TWO, TWO]) == [(0, 2), (2, 3)]
    assert layer_runs([ONE, TWO, ONE]) == [(0, 1), (1, 1), (2, 1)]
    assert layer_runs([ONE] * 3) == [(0, 3)]


def test_sharded_cache_matches_one_buffer() -> None:
    """write / commit_path / prefix give the same per-layer contents split or not."""
    gen = torch.Generator().manual_seed(0)
    args = (4, 2, 2, 16, 3, torch.float32, ONE)  # layers, batch, kv heads, slots, dim
    whole = KVCache(*args)
    split = KVCache(*args, layer_devices=[ONE, TWO, TWO, TWO])
    assert not whole.split and split.split and len(split.shards) == 2
    assert split.nbytes == whole.nbytes and split.n_layers == 4 and split.batch == 2
    with pytest.raises(RuntimeError, match="split over devices"):
        _ = split.k
    start = torch.tensor([0, 2])
    for layer in range(4):
        k, v = torch.randn(2, 2, 5, 3, generator=gen), torch.randn(2, 2, 5, 3, generator=gen)
        for cache in (whole, split):
            cache.write(layer, k, v, start)
    for cache in (whole, split):
        cache.commit(torch.tensor([1, 2]))
        cache.commit_path(torch.tensor([[0, 2, 3], [0, 1, 0]]), torch.tensor([3, 2]))
    assert whole.lengths.tolist() == split.lengths.tolist() == [4, 4]
    for layer in range(4):
        a, b = whole.prefix(layer), split.prefix(layer)
        assert torch.equal(a.k, b.k) and torch.equal(a.v, b.v)
        assert torch.equal(whole.k[layer], split.layer(layer)[0])


def as_split(target: TargetModel) -> TargetModel:
    """Pretend the first layer sits on one device and the others on another."""
    n = target.n_layers
    target.layer_devices = [ONE] + [TWO] * (n - 1)
    target.split = True
    return target


PROMPTS = [[5, 17, 33, 42, 8, 99, 120, 7, 64, 3], [11, 64, 23, 250, 31, 77]]
GEN = Generation(max_new_tokens=16, eos_ids=())


@pytest.mark.parametrize("method", ["vanilla", "tree"])
def test_split_target_decodes_like_one_device(tiny_llama, method: str) -> None:
    model = tiny_llama[0]
    outputs = []
    for split in (False, True):
        target = TargetModel(model, sdpa_attention)
        if split:
            as_split(target)
        strategy = Vanilla()
        if method == "tree":
            strategy = TreeDecoding(random_glide(model.config, 0, torch.float32, ONE), (2, 2))
        rows = strategy.generate(target, PROMPTS, GEN, pad_id=0)
        outputs.append([r.output_ids for r in rows])
        cache = target.new_cache(2, 64)
        assert len(cache.shards) == (2 if split else 1)
    assert outputs[0] == outputs[1] and all(len(o) == 16 for o in outputs[0])


def test_split_target_is_never_static(tiny_llama, monkeypatch) -> None:
    import longspec.models.target as target_module

    one = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    assert one.layer_devices == [ONE] * one.n_layers and not one.split and one.static
    devices = iter([ONE, TWO])
    monkeypatch.setattr(target_module, "module_device", lambda layer: next(devices))
    split = TargetModel(tiny_llama[0], sdpa_attention, static=True)
    assert split.layer_devices == [ONE, TWO] and split.split
    assert not split.static and split.graphs is None  # no graphs across devices


def test_commit_path_of_the_root_alone_moves_nothing() -> None:
    """A one-column path is the root at offset 0: lengths advance, buffers are untouched
    (the general move would copy each slot onto itself)."""
    cache = KVCache(2, 2, 1, 8, 3, torch.float32, ONE)
    cache.k.normal_(generator=torch.Generator().manual_seed(1))
    before = cache.k.clone()
    cache.commit(torch.tensor([2, 5]))
    cache.commit_path(torch.zeros(2, 1, dtype=torch.long), torch.tensor([1, 0]))
    assert cache.lengths.tolist() == [3, 5]
    assert torch.equal(cache.k, before)
