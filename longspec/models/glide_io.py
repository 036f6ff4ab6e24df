"""Save and load GLIDE checkpoints in the published layout (config.json + safetensors)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors.torch import load_file, save_file

from longspec.models.draft_vocab import load_ranking
from longspec.models.glide import GlideDims, GlideLayer

if TYPE_CHECKING:
    from types import SimpleNamespace

    from transformers import PretrainedConfig

_CHECKED = (
    ("hidden_size", "hidden size"),
    ("num_attention_heads", "attention heads"),
    ("num_key_value_heads", "key/value heads"),
    ("intermediate_size", "intermediate size"),
    ("vocab_size", "vocabulary size"),
)


class DraftMismatchError(ValueError):
    """A draft checkpoint that does not fit its target (or is malformed)."""


def check_fits(
    draft_config: dict, target_config: PretrainedConfig | SimpleNamespace, source: str
) -> None:
    """Raise naming the first dimension where the draft's config differs from the target's."""
    for key, what in _CHECKED:
        want = getattr(target_config, key, None)
        got = draft_config.get(key, want)
        if got != want:
            raise DraftMismatchError(
                f"draft {source} does not fit the target: {what} ({key}) is {got}, "
                f"target has {want}"
            )


def weight_files(path: Path) -> list[Path]:
    """A checkpoint dir's weight files: its *.safetensors (one or sharded), else its *.bin;
    empty when it holds neither."""
    return sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint dir: model.safetensors, sharded safetensors, or .bin."""
    files = weight_files(path)
    if not files:
        raise DraftMismatchError(f"draft {path} holds no *.safetensors or *.bin weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        if f.suffix == ".safetensors":
            state.update(load_file(f))
        else:  # pickle only through the weights-only loader: no code runs
            state.update(torch.load(f, map_location="cpu", weights_only=True))
    return state


def check_state(layer: GlideLayer, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise naming the first missing, unexpected or mis-shaped key."""
    want = layer.state_dict()
    for key, tensor in want.items():
        if key not in state:
            raise DraftMismatchError(f"draft {source} is missing key {key!r}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise DraftMismatchError(
                f"draft {source} key {key!r} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
    extra = sorted(set(state) - set(want))
    if extra:
        raise DraftMismatchError(f"draft {source} has unexpected key {extra[0]!r}")


def load_glide(
    path: str | Path,
    target_config: PretrainedConfig,
    dtype: torch.dtype,
    device: torch.device | str,
) -> GlideLayer:
    """Load a GLIDE layer from a checkpoint dir and check it against the target's config."""
    path = Path(path)
    if not path.is_dir():
        raise DraftMismatchError(f"draft path {path} does not exist or is not a directory")
    cfg_file = path / "config.json"
    draft_cfg = json.loads(cfg_file.read_text()) if cfg_file.exists() else {}
    check_fits(draft_cfg, target_config, str(path))
    layer = GlideLayer(GlideDims.from_config(target_config))
    state = _read_state(path)
    check_state(layer, state, str(path))
    layer.load_state_dict(state)
    layer.token_ranking = load_ranking(path)
    return layer.to(device=device, dtype=dtype).eval().requires_grad_(False)


def save_glide(
    layer: GlideLayer,
    path: str | Path,
    target_config: PretrainedConfig,
    extra: dict | None = None,
) -> None:
    """Write config.json (the target's config) + model.safetensors with the published keys."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in layer.state_dict().items()}
    save_file(state, str(path / "model.safetensors"), metadata={"format": "pt"})
    cfg = target_config.to_dict()
    cfg.pop("quantization_config", None)
    cfg["longspec"] = {"kind": "glide", **(extra or {})}
    (path / "config.json").write_text(json.dumps(cfg, indent=2, default=str))


def random_glide(
    target_config: PretrainedConfig, seed: int, dtype: torch.dtype, device: torch.device | str
) -> GlideLayer:
    """An untrained draft with a fixed seed (lossless decoding works with any draft)."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    layer = GlideLayer(GlideDims.from_config(target_config))
    torch.random.set_rng_state(gen_state)
    return layer.to(device=device, dtype=dtype).eval().requires_grad_(False)
