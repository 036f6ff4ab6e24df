"""Rotary position embedding applied at explicit positions."""

from __future__ import annotations

import torch
from torch import Tensor


def rotate_half(x: Tensor) -> Tensor:
    """(..., D) -> (..., D): [-x2, x1] for the halves x1, x2 of the last dim."""
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rotary(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """x (B, H, T, D) rotated by cos/sin (B, T, D) of each token's position."""
    cos, sin = cos[:, None], sin[:, None]  # (B, 1, T, D)
    return x * cos + rotate_half(x) * sin
