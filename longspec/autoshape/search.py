"""The shapes ``tree_shape=auto`` considers, and their ranking by expected tokens/s."""

from __future__ import annotations

import operator
from dataclasses import dataclass

import numpy as np

from longspec.autoshape.acceptance import Shape
from longspec.autoshape.costs import CostModel
from longspec.tree import TreeShape

MAX_PROBE_NODES = 1024  # nodes of the calibration tree (the widest level times the depth)


def positive_int(name: str, value: object) -> int:
    """``value`` as an int >= 1, or a one-line ValueError naming ``decode.auto.<name>``."""
    try:
        if isinstance(value, bool):
            raise TypeError
        out = operator.index(value)
    except TypeError:
        out = 0
    if out < 1:
        raise ValueError(f"decode.auto.{name} must be a positive integer, got {value!r}")
    return out


@dataclass(frozen=True)
class ShapeSpace:
    """Beam trees of at most ``max_depth`` levels and ``max_nodes`` draft nodes whose level
    widths come from ``widths`` and rise then fall (once a level is narrower than the one
    above, no later level is wider): [4, 16, 16], [3, 2, 1], [2, 4, 4, 2], ...; and the
    empty tree [] (no draft: a vanilla round), for when drafting does not pay."""

    widths: tuple[int, ...]
    max_depth: int
    max_nodes: int

    def __init__(self, widths, max_depth: int, max_nodes: int):
        if isinstance(widths, str | bytes) or not hasattr(widths, "__iter__") or not widths:
            raise ValueError(f"decode.auto.widths must be a non-empty list, got {widths!r}")
        levels = sorted({positive_int("widths", w) for w in widths})
        object.__setattr__(self, "widths", tuple(levels))
        object.__setattr__(self, "max_depth", positive_int("max_depth", max_depth))
        object.__setattr__(self, "max_nodes", positive_int("max_nodes", max_nodes))
        if self.probe.num_nodes > MAX_PROBE_NODES:
            raise ValueError(
                f"decode.auto: widths up to {self.widths[-1]} over max_depth {self.max_depth} "
                f"levels need a {self.probe.num_nodes}-node calibration tree; at most "
                f"{MAX_PROBE_NODES} (lower decode.auto.widths or decode.auto.max_depth)"
            )

    @property
    def probe(self) -> TreeShape:
        """The wide tree calibration runs: as wide and deep as any shape of the space."""
        width = min(self.widths[-1], self.max_nodes)
        return TreeShape((width,) * min(self.max_depth, self.max_nodes))

    def extensions(self, prefix: Shape) -> list[int]:
        """Widths the next level of a shape starting with ``prefix`` may have."""
        if len(prefix) >= self.max_depth:
            return []
        room = self.max_nodes - sum(prefix)
        falling = any(b < a for a, b in zip(prefix, prefix[1:], strict=False))
        top = prefix[-1] if falling else room
        return [w for w in self.widths if w <= min(room, top)]

    def shapes(self) -> list[Shape]:
        """Every shape of the space, the empty one (no draft: vanilla rounds) first."""
        out, todo = [()], [()]
        while todo:
            prefix = todo.pop()
            for w in self.extensions(prefix):
                out.append(prefix + (w,))
                todo.append(prefix + (w,))
        return out


@dataclass(frozen=True)
class Choice:
    """A shape with its expected tokens per round (accepted + 1) and seconds per round."""

    shape: Shape
    tokens_per_round: float
    round_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens_per_round / self.round_s

    def as_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "tokens_per_round": round(self.tokens_per_round, 3),
            "round_ms": round(self.round_s * 1e3, 3),
            "tokens_per_s": round(self.tokens_per_s, 2),
        }


def rank(accepted: dict[Shape, float], costs: CostModel, top: int = 5) -> list[Choice]:
    """The ``top`` shapes by expected tokens/s (fewer nodes first on ties)."""
    shapes = list(accepted)
    depth = max(len(s) for s in shapes)
    table = np.array([s + (0,) * (depth - len(s)) for s in shapes])  # (S, D)
    seconds = costs.round_seconds(table)  # (S,)
    per_round = np.array([accepted[s] for s in shapes]) + 1.0  # (S,) accepted + bonus
    order = np.lexsort((table.sum(1), -(per_round / seconds)))[:top]
    return [Choice(shapes[i], float(per_round[i]), float(seconds[i])) for i in order]
