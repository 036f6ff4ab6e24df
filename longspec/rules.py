"""Value rules shared by the config checks (``longspec.validate``, ``longspec.train.checks``,
the benches) and the decode guards: each ``require_*`` and ``readable_*`` raises a one-line
``ValueError`` naming the setting and what is allowed."""

from __future__ import annotations

import os
from collections.abc import Collection
from pathlib import Path
from typing import Any


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def require_int(name: str, value: Any, low: int, what: str = "") -> None:
    """ValueError unless ``value`` is an integer >= low."""
    if not is_int(value) or value < low:
        bound = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {bound}{what}, got {value!r}")


def require_choice(name: str, value: Any, allowed: Collection[str]) -> None:
    """ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value} is not one of {', '.join(allowed)}")


def require_levels(name: str, value: Any) -> None:
    """ValueError unless ``value`` is a non-empty list of positive integers."""
    if isinstance(value, str) or not value or not all(is_int(w) and w >= 1 for w in value):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")


def readable_file(name: str, path: Any) -> Path:
    """``path`` as a Path; ValueError naming the setting if it is not a readable file."""
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise ValueError(f"{name}={path} does not exist")
    if not p.is_file():
        raise ValueError(f"{name}={path} is not a file")
    try:
        with p.open("rb") as f:
            f.read(1)
    except OSError as err:
        raise ValueError(f"{name}={path} cannot be read: {err.strerror or err}") from None
    return p


def readable_dir(name: str, path: Any) -> Path:
    """``path`` as a Path; ValueError naming the setting if it is not a readable directory."""
    p = Path(str(path)).expanduser()
    if not p.is_dir():
        what = "is not a directory" if p.exists() else "does not exist"
        raise ValueError(f"{name}={path} {what}")
    if not os.access(p, os.R_OK | os.X_OK):
        raise ValueError(f"{name}={path} cannot be read (permission denied)")
    return p
