"""Value rules shared by the config checks (``longspec.validate``, ``longspec.train.checks``,
the benches) and the decode guards: each ``_require_*`` raises a one-line ``ValueError``
naming the setting and what is allowed."""

from __future__ import annotations

from collections.abc import Collection
from typing import Any


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _require_int(name: str, value: Any, low: int, what: str = "") -> None:
    """ValueError unless ``value`` is an integer >= low."""
    if not _is_int(value) or value < low:
        bound = "a positive integer" if low == 1 else f"an integer >= {low}"
        raise ValueError(f"{name} must be {bound}{what}, got {value!r}")


def _require_choice(name: str, value: Any, allowed: Collection[str]) -> None:
    """ValueError unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name}={value} is not one of {', '.join(allowed)}")


def _require_levels(name: str, value: Any) -> None:
    """ValueError unless ``value`` is a non-empty list of positive integers."""
    if isinstance(value, str) or not value or not all(_is_int(w) and w >= 1 for w in value):
        raise ValueError(f"{name} must be a list of positive integers, got {value!r}")
