"""Checkpoints of a training run and the exported draft.

``<work_dir>/checkpoint/`` (the resume point, float32):
  config.json + model.safetensors  (``save_glide``: the published layout)
  trainer_state.pt                 (step, optimizer state, metric history: tensors and plain
                                    Python values only, loaded with ``weights_only=True``)
  train_config.yaml, metrics.json

``train.save_path`` (the shipped draft, ``train.save_dtype``, float16 by default):
  config.json + model.safetensors, train_config.yaml, metrics.json, README.md (model card).

Each directory is written next to its final place and renamed over it, so an interrupted
save never leaves a half-written checkpoint behind.
"""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import OmegaConf

from longspec.models.draft_vocab import save_ranking
from longspec.models.glide import GlideLayer
from longspec.models.glide_io import load_glide, save_glide

if TYPE_CHECKING:
    from omegaconf import DictConfig
    from transformers import PretrainedConfig

STATE_FILE = "trainer_state.pt"


REPO_ROOT = Path(__file__).resolve().parents[2]


def repo_path(path: str | Path) -> Path:
    """A configured path: ``~`` expanded; a relative path is relative to the repository root
    (as the model configs' draft paths are), not to Hydra's run directory."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def _write_dir(dest: Path, fill) -> None:
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    fill(tmp)
    old = dest.with_name(f".{dest.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    tmp.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _side_files(path: Path, cfg, metrics: dict) -> None:
    (path / "train_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
    (path / "metrics.json").write_text(json.dumps(metrics, indent=2, default=str))


def save_checkpoint(
    dest: Path,
    layer: GlideLayer,
    target_config: PretrainedConfig,
    cfg: DictConfig,
    metrics: dict,
    state: dict[str, Any],
) -> None:
    def fill(tmp: Path) -> None:
        save_glide(layer, tmp, target_config, extra={"step": state["step"], "dtype": "float32"})
        torch.save(state, tmp / STATE_FILE)
        _side_files(tmp, cfg, metrics)

    _write_dir(dest, fill)


def load_checkpoint(
    src: Path, target_config: PretrainedConfig, device: torch.device | str
) -> tuple[GlideLayer, dict[str, Any]]:
    """(float32 trainable layer, trainer state) of a checkpoint directory."""
    src = Path(src)
    if not (src / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume=true but {src / STATE_FILE} does not exist")
    layer = load_glide(src, target_config, torch.float32, device)
    layer.train().requires_grad_(True)
    state = torch.load(src / STATE_FILE, map_location=device, weights_only=True)
    return layer, state


def export_draft(
    dest: Path,
    layer: GlideLayer,
    target_config: PretrainedConfig,
    cfg: DictConfig,
    metrics: dict,
    dtype: torch.dtype,
    card: str,
    extra: dict | None = None,
    token_counts: torch.Tensor | None = None,
) -> None:
    """The draft in the published layout, with its config, metrics, card and (given the
    train split's token counts) the ranking ``decode.draft_vocab`` uses."""
    shipped = copy.deepcopy(layer).to(device="cpu", dtype=dtype)

    def fill(tmp: Path) -> None:
        save_glide(shipped, tmp, target_config, extra=extra)
        if token_counts is not None:
            save_ranking(tmp, token_counts, "pycode train split")
        _side_files(tmp, cfg, metrics)
        (tmp / "README.md").write_text(card)

    _write_dir(dest, fill)
