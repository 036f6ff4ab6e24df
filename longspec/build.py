"""Turn a composed config into the objects of a run: device, target, strategy."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from longspec.loading import load_target, resolve_draft_path
from longspec.models.glide import GlideLayer
from longspec.models.glide_io import load_glide, random_glide
from longspec.models.target import TargetModel
from longspec.placement import split_kwargs

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    """``auto`` -> float16 on GPU (as in the paper), float32 on CPU."""
    if name == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[name]


def build_target(
    cfg: DictConfig, device: torch.device, dtype: torch.dtype
) -> tuple[TargetModel, PreTrainedTokenizerBase]:
    """Load the target and its tokenizer; wrap it with the chosen attention backend.

    With ``resources.gpus_per_job`` > 1 the target is split over the job's GPUs
    (``longspec.placement``).
    """
    gpus = OmegaConf.select(cfg, "resources.gpus_per_job", default=1)
    hf, tokenizer = load_target(
        cfg.model.target,
        dtype=dtype,
        device=device,
        trust_remote_code=cfg.trust_remote_code,
        **split_kwargs(gpus, device),
    )
    attention = instantiate(cfg.attention)
    # On a GPU: static shapes, so verify and propose run as captured CUDA graphs (one
    # device only: a split target runs without graphs).
    target = TargetModel(hf, attention, static=device.type == "cuda")
    if target.split:
        log.info(
            "target split over %s (no CUDA graphs)", sorted(set(map(str, target.layer_devices)))
        )
    return target, tokenizer


def load_draft(cfg: DictConfig, target: TargetModel) -> GlideLayer:
    """The model's GLIDE draft, or a seeded random one when the model config has none."""
    path = resolve_draft_path(cfg.model.draft)
    if path is None:
        log.warning("model %s has no trained draft: using a random GLIDE layer", cfg.model.name)
        return random_glide(target.hf.config, cfg.seed, target.dtype, target.device)
    return load_glide(path, target.hf.config, target.dtype, target.device)


def build_strategy(decode_cfg: DictConfig, target: TargetModel, cfg: DictConfig) -> Any:
    """Instantiate a ``decode/`` config (a partial); give it the draft if it needs one."""
    factory = instantiate(decode_cfg, _convert_="all")
    if getattr(factory.func, "needs_draft", False):
        return factory(draft=load_draft(cfg, target))
    return factory()
