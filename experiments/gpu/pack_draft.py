"""Pack a draft directory (exported draft or training checkpoint) as one tar, float16 weights.

    python experiments/gpu/pack_draft.py SRC_DIR OUT.tar

Keeps config.json, model.safetensors (cast to float16: a SmolLM2 draft is ~8.8 MB then,
under the device tool's 16 MiB per returned file), metrics.json, train_config.yaml and
README.md; the optimizer state of a checkpoint is left out. Unpack with
``tar -xf OUT.tar -C longspec/assets/glide-smollm2``.
"""

from __future__ import annotations

import io
import json
import sys
import tarfile
from pathlib import Path

import torch
from safetensors.torch import load_file, save

SIDE_FILES = ("metrics.json", "train_config.yaml", "README.md")


def float16_weights(path: Path) -> bytes:
    state = load_file(str(path))
    half = {k: v.to(torch.float16) if v.is_floating_point() else v for k, v in state.items()}
    return save(half, metadata={"format": "pt"})


def float16_config(path: Path) -> bytes:
    """config.json with the recorded weight dtype set to float16."""
    cfg = json.loads(path.read_text())
    if isinstance(cfg.get("longspec"), dict):
        cfg["longspec"]["dtype"] = "float16"
    return json.dumps(cfg, indent=2).encode()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def pack(src: Path, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w") as tar:
        _add(tar, "model.safetensors", float16_weights(src / "model.safetensors"))
        _add(tar, "config.json", float16_config(src / "config.json"))
        for name in SIDE_FILES:
            if (src / name).is_file():
                _add(tar, name, (src / name).read_bytes())


if __name__ == "__main__":
    pack(Path(sys.argv[1]), Path(sys.argv[2]))
