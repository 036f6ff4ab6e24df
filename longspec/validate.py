"""Config checks that run before any model loads.

:func:`validate` runs every check of :data:`CHECKS` (small functions, registered with
``@check``) on a composed run config. Each raises a one-line ``ValueError`` naming the
setting and what is allowed; ``run.py`` prints it as ``error: ...`` and exits 2.

The guards used while decoding are in :mod:`longspec.finite`; secret redaction is in
:mod:`longspec.redact`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import re
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from longspec.rules import (
    is_int,
    is_number,
    readable_dir,
    readable_file,
    require_choice,
    require_int,
)

MAX_TREE_NODES = 1024  # draft nodes per round (sum of tree_shape); the paper's tree has 68
DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?")
DTYPES = ("auto", "float32", "float16", "bfloat16")
# Optional packages a component may import, and how to install them.
INSTALL_HINTS = {
    "flash_attn": "pip install longspec[gpu]",
    "submitit": "pip install longspec[slurm]",
    "hydra_plugins": "pip install longspec[slurm]",
}
# Packages that only work on a CUDA device.
CUDA_ONLY = ("flash_attn",)
# Groups whose ``_target_`` must import (the setting named in the error).
COMPONENTS = ("attention", "decode", "baseline", "data", "logger")
# Hub ids look like "org/name"; anything else that names a file must exist locally.
HUB_ID = re.compile(r"[A-Za-z0-9][\w.\-]*/[\w.\-]+")

# The checks that look at cfg.decode / cfg.baseline (and the components they import).
DECODE_CHECKS = ("tree_shape", "decode_numbers", "components")

Check = Callable[[DictConfig], None]
CHECKS: list[Check] = []


def check(fn: Check) -> Check:
    """Register a config check (run in registration order)."""
    CHECKS.append(fn)
    return fn


def validate(cfg: DictConfig, only: Collection[str] | None = None) -> None:
    """Run every registered check (or those named in ``only``); the first problem raises
    a one-line ValueError."""
    for fn in CHECKS:
        if only is not None and fn.__name__ not in only:
            continue
        try:
            fn(cfg)
        except OmegaConfBaseException as err:  # an interpolation that does not resolve, ...
            raise ValueError(f"config error: {_first_line(err)}") from None


# ---------------------------------------------------------------------------------------------
# Helpers


def _first_line(err: BaseException) -> str:
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def _get(cfg: Any, key: str) -> Any:
    """The value at a dotted key, or None when absent."""
    return OmegaConf.select(cfg, key, default=None) if cfg is not None else None


def _decode_nodes(cfg: DictConfig) -> Iterator[tuple[str, DictConfig]]:
    """("decode", cfg.decode) and ("baseline", cfg.baseline) when set."""
    for name in ("decode", "baseline"):
        node = _get(cfg, name)
        if isinstance(node, DictConfig):
            yield name, node


def _looks_like_hub_id(path: str) -> bool:
    return bool(HUB_ID.fullmatch(path)) and not Path(path).expanduser().exists()


# ---------------------------------------------------------------------------------------------
# Checks (registration order = the order a user sees problems in)


@check
def complete(cfg: DictConfig) -> None:
    """Every ``???`` value is set."""
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        key = missing[0]
        group = key.split(".")[0]
        choice = _choice(group)
        where = f" (required by {group}={choice})" if choice else ""
        raise ValueError(f"{key} is not set{where}: add {key}=... to the command line")


def _choice(group: str) -> str | None:
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get().runtime.choices.get(group)
    except ValueError:
        return None


@check
def device(cfg: DictConfig) -> None:
    """device is auto/cpu/cuda/cuda:N, and a CUDA device exists when asked for."""
    name = cfg.device
    if not isinstance(name, str) or not DEVICE.fullmatch(name):
        raise ValueError(f"device={name} is not one of auto, cpu, cuda, cuda:N")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(
                f"device={name} but no CUDA GPU is visible (torch.cuda.is_available() is "
                "False); use device=cpu or device=auto"
            )
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(
                f"device={name} but only {torch.cuda.device_count()} CUDA device(s) are "
                f"visible: use cuda:0..cuda:{torch.cuda.device_count() - 1}"
            )


@check
def dtype(cfg: DictConfig) -> None:
    for key in ("dtype", "model.dtype"):
        value = _get(cfg, key)
        if key == "model.dtype" and value is None:
            continue
        require_choice(key, value, DTYPES)


@check
def run_settings(cfg: DictConfig) -> None:
    require_int("batch_size", cfg.batch_size, 1)
    if not is_int(cfg.seed) or not -(2**63) <= cfg.seed < 2**64:
        raise ValueError(f"seed must be an integer in [-2**63, 2**64), got {cfg.seed!r}")


@check
def resources(cfg: DictConfig) -> None:
    """resources.gpus_per_job >= 1; above 1 that many CUDA GPUs are visible to the job."""
    per_job = _get(cfg, "resources.gpus_per_job")
    if per_job is None:
        return
    require_int("resources.gpus_per_job", per_job, 1)
    if per_job == 1:
        return
    if cfg.device == "cpu" or str(cfg.device).startswith("cuda:"):
        raise ValueError(
            f"resources.gpus_per_job={per_job} splits the model over the job's GPUs: use "
            f"device=auto or device=cuda, not device={cfg.device}"
        )
    visible = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if visible < per_job:
        raise ValueError(
            f"resources.gpus_per_job={per_job} but this job sees {visible} CUDA GPU(s); "
            "lower it or run on a node with more GPUs"
        )


@check
def model_context(cfg: DictConfig) -> None:
    context = _get(cfg, "model.context")
    if context is not None:
        require_int("model.context", context, 2, " or null (the model's)")


@check
def generation(cfg: DictConfig) -> None:
    """max_new_tokens in [1, model.context), temperature >= 0, top_p in (0, 1]."""
    gen = cfg.generation
    context = _get(cfg, "model.context")
    require_int("generation.max_new_tokens", gen.max_new_tokens, 1)
    if is_int(context) and gen.max_new_tokens >= context:
        raise ValueError(
            f"generation.max_new_tokens={gen.max_new_tokens} must be below "
            f"model.context={context} (the prompt needs room too)"
        )
    t = gen.temperature
    if not is_number(t) or not math.isfinite(t) or t < 0:
        raise ValueError(f"generation.temperature must be >= 0 (0 = greedy), got {t!r}")
    p = gen.top_p
    if not is_number(p) or not 0 < p <= 1:
        raise ValueError(f"generation.top_p must be in (0, 1], got {p!r}")


@check
def tree_shape(cfg: DictConfig) -> None:
    """A non-empty list of positive integers with at most MAX_TREE_NODES nodes in all."""
    for prefix, node in _decode_nodes(cfg):
        if "tree_shape" not in node:
            continue
        name = f"{prefix}.tree_shape"
        shape = node.tree_shape
        if shape == "auto":
            _check_auto(prefix, node.get("auto"))
            continue
        example = "e.g. [4,16,16,16,16]"
        if not isinstance(shape, ListConfig | list) or len(shape) == 0:
            raise ValueError(
                f"{name} must be a non-empty list of nodes per level ({example}) or auto, "
                f"got {shape!r}"
            )
        for level, width in enumerate(shape, start=1):
            if not is_int(width) or width < 1:
                raise ValueError(
                    f"{name} level {level} is {width!r}: every level must be a positive "
                    f"integer ({example})"
                )
        if sum(shape) > MAX_TREE_NODES:
            raise ValueError(
                f"{name} has {sum(shape)} nodes; at most {MAX_TREE_NODES} draft nodes per "
                "round are allowed"
            )


def _check_auto(prefix: str, auto: Any) -> None:
    """The settings of ``tree_shape=auto`` (longspec.autoshape), checked by building them."""
    from longspec.autoshape.policy import shape_policy

    if auto is not None and not isinstance(auto, DictConfig):
        raise ValueError(f"{prefix}.auto must be a mapping of settings, got {auto!r}")
    settings = OmegaConf.to_container(auto, resolve=True) if auto is not None else None
    try:
        shape_policy("auto", settings)
    except ValueError as err:
        raise ValueError(str(err).replace("decode.auto", f"{prefix}.auto", 1)) from None


@check
def decode_numbers(cfg: DictConfig) -> None:
    """gamma, window, sink, prompt_lookup_num_tokens of decode (and baseline)."""
    for prefix, node in _decode_nodes(cfg):
        if "gamma" in node:
            require_int(f"{prefix}.gamma", node.gamma, 1, " (draft tokens per round)")
            if node.gamma > MAX_TREE_NODES:
                raise ValueError(f"{prefix}.gamma={node.gamma} is above {MAX_TREE_NODES}")
        if "window" in node:
            require_int(f"{prefix}.window", node.window, 1)
        if "sink" in node:
            require_int(f"{prefix}.sink", node.sink, 0)
        lookup = node.get("prompt_lookup_num_tokens")
        if lookup is not None:
            require_int(f"{prefix}.prompt_lookup_num_tokens", lookup, 1, " or null")


@check
def model_target(cfg: DictConfig) -> None:
    """The target's files, when they are local."""
    spec = _get(cfg, "model.target")
    if spec is None:
        raise ValueError("model.target is not set: pick a model=... option")
    if spec.get("tiny"):
        return
    path, package, gguf = spec.get("path"), spec.get("package"), spec.get("gguf_file")
    if path is None and package is None:
        raise ValueError("model.target needs one of path / package / tiny")
    root = _package_path("model.target", path, package)
    if root is None:
        return  # a hub id: checked when it downloads
    if gguf:
        readable_file("model.target.gguf_file", root / gguf)
    elif not root.exists():
        raise ValueError(f"model.target.path={root} does not exist")


def _package_path(name: str, path: str | None, package: str | None) -> Path | None:
    """Local path of a (path, package) spec; None for a hub id."""
    if package is not None:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            from longspec.loading import INSTALL_HINTS as MODEL_HINTS

            hint = MODEL_HINTS.get(package, f"install the package providing {package!r}")
            raise ValueError(f"{name}.package={package} is not installed; run: {hint}")
        return Path(next(iter(spec.submodule_search_locations))) / (path or "")
    if _looks_like_hub_id(str(path)):
        return None
    return Path(str(path)).expanduser()


@check
def draft(cfg: DictConfig) -> None:
    """model.draft.path exists, holds weights, and fits the target where that is known."""
    spec = _get(cfg, "model.draft")
    if spec is None or spec.get("path") is None:
        return
    where = "model.draft.path"
    root = _package_path("model.draft", spec.get("path"), spec.get("package"))
    if root is None:
        return  # a hub id
    if not root.is_dir():
        what = "is not a directory" if root.exists() else "does not exist"
        raise ValueError(f"{where}={root} {what} (a GLIDE checkpoint dir)")
    if not any(root.glob("*.safetensors")) and not any(root.glob("*.bin")):
        raise ValueError(f"{where}={root} holds no *.safetensors or *.bin weights")
    _check_draft_vocab(cfg, root)
    draft_cfg_file = root / "config.json"
    target_dims = _known_target_dims(cfg)
    if draft_cfg_file.is_file() and target_dims:
        from longspec.models.glide_io import check_fits

        draft_dims = json.loads(draft_cfg_file.read_text())
        # Dimensions unknown before loading compare equal (they are checked at load time).
        check_fits(draft_dims, SimpleNamespace(**{**draft_dims, **target_dims}), str(root))


def _check_draft_vocab(cfg: DictConfig, root: Path) -> None:
    """decode.draft_vocab (and baseline's): a positive integer, with the draft's token
    ranking beside its weights."""
    from longspec.models.draft_vocab import RANKING_FILE

    for name, node in _decode_nodes(cfg):
        size = node.get("draft_vocab")
        if size is None:
            continue
        require_int(f"{name}.draft_vocab", size, 1, " or null")
        if not (root / RANKING_FILE).is_file():
            raise ValueError(
                f"{name}.draft_vocab={size} needs {root / RANKING_FILE} (write it with "
                "python -m longspec.train.draft_vocab)"
            )


FIT_KEYS = (
    "hidden_size",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
)


def _known_target_dims(cfg: DictConfig) -> dict[str, Any]:
    """The target's dimensions that are known without loading it (tiny spec, local config)."""
    spec = _get(cfg, "model.target")
    if spec is None:
        return {}
    if spec.get("tiny"):
        from longspec.models.tiny import DEFAULTS

        tiny = {**DEFAULTS, **OmegaConf.to_container(spec.tiny)}
        return {k: tiny[k] for k in FIT_KEYS if k in tiny}
    if spec.get("gguf_file") or spec.get("path") is None:
        return {}
    config = Path(str(spec.path)).expanduser() / "config.json"
    if spec.get("package") is None and config.is_file():
        try:
            data = json.loads(config.read_text())
        except (OSError, ValueError):
            return {}
        return {k: data[k] for k in FIT_KEYS if k in data}
    return {}


@check
def components(cfg: DictConfig) -> None:
    """Each group's ``_target_`` imports; a missing optional package names its extra."""
    for group in COMPONENTS:
        node = _get(cfg, group)
        if not isinstance(node, DictConfig) or "_target_" not in node:
            continue
        target = str(node._target_)
        _require_importable(group, target)
        if group == "attention":
            _check_cuda_only(cfg, target)


def _require_importable(group: str, target: str) -> None:
    module_name, _, attr = target.rpartition(".")
    choice = _choice(group)
    setting = f"{group}={choice}" if choice else f"{group}._target_={target}"
    try:
        module = importlib.import_module(module_name or target)
    except ModuleNotFoundError as err:
        missing = (err.name or "").split(".")[0]
        if missing and missing != "longspec":
            hint = INSTALL_HINTS.get(missing, f"pip install {missing}")
            raise ValueError(f"{setting} needs the package {missing!r}: {hint}") from None
        raise ValueError(f"{setting}: {target} does not exist") from None
    except ImportError as err:
        raise ValueError(f"{setting}: cannot import {target} ({_first_line(err)})") from None
    if attr and not hasattr(module, attr):
        raise ValueError(f"{setting}: {module_name} has no {attr!r}")


def _check_cuda_only(cfg: DictConfig, target: str) -> None:
    for package in CUDA_ONLY:
        needs = package in target or package.replace("_", "") in target.replace("_", "")
        if not needs:
            continue
        if importlib.util.find_spec(package) is None:
            raise ValueError(
                f"attention={_choice('attention') or target} needs the package {package!r}: "
                f"{INSTALL_HINTS[package]}"
            )
        if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
            raise ValueError(f"attention={_choice('attention') or target} needs a CUDA device")


@check
def data(cfg: DictConfig) -> None:
    """data.* files and folders exist and are readable; counts are sane."""
    node = _get(cfg, "data")
    if not isinstance(node, DictConfig):
        raise ValueError("data is not set: pick a data=... option")
    _data_counts(cfg, node)
    if node.get("root") is not None:
        readable_dir("data.root", node.root)
    _data_choices(node)
    if str(node.get("_target_", "")).endswith("LongBenchDataset"):
        from longspec.data.longbench import TASKS

        require_choice("data.task", node.get("task"), TASKS)
    if node.get("dir") is not None:
        _data_dir(node)
    if node.get("path") is not None:
        _check_jsonl("data.path", readable_file("data.path", node.path), node.get("_target_"))


def _data_counts(cfg: DictConfig, node: DictConfig) -> None:
    """data.num_samples >= 1 (or null); data.prompt_tokens fits the context with the new
    tokens."""
    num = node.get("num_samples")
    if num is not None:
        require_int("data.num_samples", num, 1, " or null (all)")
    tokens = node.get("prompt_tokens")
    if tokens is None:
        return
    require_int("data.prompt_tokens", tokens, 1)
    context = _get(cfg, "model.context")
    budget = context - cfg.generation.max_new_tokens if is_int(context) else None
    if budget is not None and tokens > budget:
        raise ValueError(
            f"data.prompt_tokens={tokens} does not fit: model.context={context} - "
            f"generation.max_new_tokens={cfg.generation.max_new_tokens} leaves {budget}"
        )


def _data_dir(node: DictConfig) -> None:
    """data.dir is readable and holds the task's jsonl (with the command that writes it)."""
    folder = readable_dir("data.dir", node.dir)
    if node.get("task") is None:
        return
    task_file = folder / f"{node.task}.jsonl"
    if not task_file.exists():
        raise ValueError(
            f"data.dir={node.dir} has no {task_file.name} (data.task={node.task}); "
            f"write it with: python -m longspec.data.convert_longbench --task "
            f"{node.task} --out {node.dir}"
        )
    _check_jsonl("data.dir", readable_file("data.dir", task_file))


def _data_choices(node: DictConfig) -> None:
    """pycode's split, localtext's kind and file count (where the data config has them)."""
    from longspec.data.local_files import KINDS
    from longspec.data.pycode import SPLITS

    for key, allowed in (("split", SPLITS), ("kind", KINDS)):
        if key in node:
            require_choice(f"data.{key}", node.get(key), allowed)
    if "min_files" in node:
        require_int("data.min_files", node.min_files, 1)


def _check_jsonl(name: str, path: Path, target: str | None = None) -> None:
    """Every line of a JSON Lines file parses (prompt files: every line has a prompt)."""
    from longspec.data.jsonl import parse_prompt_records, read_bytes, read_jsonl

    if target and target.endswith("JsonlDataset"):
        parse_prompt_records(read_bytes(path), str(path))
    else:
        for _ in read_jsonl(path):
            pass
