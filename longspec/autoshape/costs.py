"""What one beam-tree round costs on this device: measured, then interpolated per shape.

A round of shape [n1, ..., nL] runs the draft on the root and on levels 1..L-1 (each step
also takes the log-softmax over the vocabulary and the level's top-k), one target forward
over the N+1 tree nodes, and the bookkeeping (acceptance, cache moves, the host copy).
The draft and verification costs are timed on the grids below at the prompt's real length
(the cache holds the prompt). What a timed calibration round took beyond its parts is
either a fixed overhead per round (``with_overhead``: graphed GPU rounds, where it is the
bookkeeping kernels) or a factor on every part (``with_scale``: on a CPU, the parts cost
1.1-1.6x more inside the decode loop than timed alone, about the same factor for small
and large trees, experiments/results/auto_shape_smollm2_cpu_*.json; a fixed overhead fitted
on the wide calibration tree then charges small trees too much and favours big ones).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch

from longspec.bench.timing import Timing
from longspec.cache import DraftCache, KVCache
from longspec.models.draft import GlideDraft
from longspec.models.target import TargetModel
from longspec.tree import best_children

# Nodes verified at once (tree + root), and nodes of one draft level, timed up to the largest.
VERIFY_GRID = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64, 80, 112, 160, 224, 320, 448, 640)
DRAFT_GRID = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class CostModel:
    """Seconds per round of any shape, from measured points (linear in between)."""

    verify_nodes: tuple[int, ...]  # nodes verified at once, root included
    verify_s: tuple[float, ...]
    draft_nodes: tuple[int, ...]  # nodes of one draft level
    draft_s: tuple[float, ...]
    overhead_s: float = 0.0  # per round, besides drafting and verification
    scale: float = 1.0  # factor on drafting and verification inside a real round

    def round_seconds(self, shapes: np.ndarray) -> np.ndarray:
        """shapes (S, D) nodes per level, 0 past a shape's depth -> (S,) seconds per round."""
        return self.overhead_s + self.scale * self._parts(shapes)

    def _parts(self, shapes: np.ndarray) -> np.ndarray:
        """(S,) seconds of the draft levels and the verification, as timed alone."""
        stepped = np.concatenate([np.ones_like(shapes[:, :1]), shapes[:, :-1]], 1)  # (S, D)
        stepped = np.where(shapes > 0, stepped, 0)  # root, then every level but the last
        draft = np.where(stepped > 0, np.interp(stepped, self.draft_nodes, self.draft_s), 0.0)
        verify = np.interp(shapes.sum(1) + 1, self.verify_nodes, self.verify_s)  # (S,)
        return draft.sum(1) + verify

    def with_overhead(self, round_s: float, shape: tuple[int, ...]) -> CostModel:
        """The model (scale 1) with its fixed overhead set so that ``shape`` costs the
        ``round_s`` measured."""
        parts = float(self._parts(np.array([shape]))[0])
        return replace(self, overhead_s=max(round_s - parts, 0.0), scale=1.0)

    def with_scale(self, round_s: float, shape: tuple[int, ...]) -> CostModel:
        """The model (no fixed overhead) with its factor set so that ``shape`` costs the
        ``round_s`` measured (at least 1: a round never costs less than its parts)."""
        parts = float(self._parts(np.array([shape]))[0])
        return replace(self, overhead_s=0.0, scale=max(round_s / parts, 1.0))

    def as_dict(self) -> dict:
        return {
            "verify_ms": _ms(self.verify_nodes, self.verify_s),
            "draft_level_ms": _ms(self.draft_nodes, self.draft_s),
            "overhead_ms": round(self.overhead_s * 1e3, 3),
            "scale": round(self.scale, 4),
        }


def _ms(nodes: tuple[int, ...], seconds: tuple[float, ...]) -> dict[int, float]:
    return {n: round(s * 1e3, 3) for n, s in zip(nodes, seconds, strict=True)}


def grid(points: tuple[int, ...], top: int) -> tuple[int, ...]:
    """The grid's points below ``top``, then ``top`` itself."""
    return (*(p for p in points if p < top), top)


def measure(
    target: TargetModel,
    draft: GlideDraft,
    dcache: DraftCache,
    cache: KVCache,
    max_verify: int,
    max_level: int,
    timing: Timing,
) -> CostModel:
    """Time verification of up to ``max_verify`` nodes and draft levels of up to
    ``max_level`` nodes after each row's committed prefix (nothing is committed)."""
    verify_nodes = grid(VERIFY_GRID, max_verify)
    draft_nodes = grid(DRAFT_GRID, max_level)
    verify_s = timing.medians([_verify(target, cache, n) for n in verify_nodes])
    draft_s = timing.medians([_draft_level(target, draft, dcache, cache, n) for n in draft_nodes])
    return CostModel(verify_nodes, rising(verify_s), draft_nodes, rising(draft_s))


def rising(seconds: list[float]) -> tuple[float, ...]:
    """The closest non-decreasing sequence (least squares, pool-adjacent-violators): more
    nodes never cost less, so a lower time after a higher one is noise of a shared machine."""
    blocks: list[list[float]] = []  # [mean, count] of pooled neighbours
    for value in seconds:
        blocks.append([value, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return tuple(m for m, n in blocks for _ in range(int(n)))


def _verify(target: TargetModel, cache: KVCache, n: int):
    """One target forward over a chain of n nodes (the cost does not depend on the links)."""
    batch, device = cache.lengths.shape[0], target.device
    tokens = torch.zeros(batch, n, dtype=torch.long, device=device)  # (B, n)
    depths = torch.arange(n, device=device).expand(batch, n)  # (B, n)
    mask = torch.ones(n, n, dtype=torch.bool, device=device).tril().expand(batch, n, n)
    return lambda: target.verify(tokens, depths, mask, cache)


def _draft_level(
    target: TargetModel, draft: GlideDraft, dcache: DraftCache, cache: KVCache, n: int
):
    """One draft step over n nodes, with the top-k a beam level takes (``best_children``)."""
    batch, device = cache.lengths.shape[0], target.device
    tokens = torch.zeros(batch, n, dtype=torch.long, device=device)  # (B, n)
    positions = (cache.lengths[:, None] + 1).expand(batch, n)  # (B, n)
    sees = torch.eye(n, dtype=torch.bool, device=device).expand(batch, n, n)  # (B, n, n)

    def level(ids: torch.Tensor) -> torch.Tensor:
        dcache.clear_pending()
        scores = draft.step_scores(dcache, cache, ids, positions, sees)  # (B, n, K)
        cum = torch.zeros(batch, n, device=device)  # (B, n)
        return best_children(scores, cum, 16)[2]  # (B, 16)

    key = ("autoshape-draft", n, tuple(tokens.shape), cache.lengths.data_ptr())
    return lambda: target.run_static(key, level, tokens)
