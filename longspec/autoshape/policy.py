"""Where a beam tree's shape comes from: the config's list, or ``auto`` (measured).

``auto`` tunes once per (target, batch size, prompt-length bucket, sampling settings), on
the first decode of at least MIN_TUNED_TOKENS tokens, before that decode starts (the time
goes to no decode's timer; it is reported as ``tune_s``). It calibrates on that decode's
prompts and, when the run announced its prompts (``plan``), on more of them in the same
bucket: up to ``prompts`` in all, in batches of the decode's size. Shorter decodes
(warm-ups) use the shape tuned for the nearest bucket, else a one-node chain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from longspec.autoshape.search import ShapeSpace, positive_int
from longspec.decoding.sampling import Generation
from longspec.models.target import TargetModel
from longspec.tree import TreeShape

if TYPE_CHECKING:
    from longspec.decoding.glide import TreeDecoding

log = logging.getLogger(__name__)

MIN_TUNED_TOKENS = 16  # a decode shorter than this (a warm-up) does not pay for tuning
DEFAULT_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16)
AUTO_SETTINGS = {
    "widths",
    "max_depth",
    "max_nodes",
    "calib_tokens",
    "scale_costs",
    "race",
    "race_tokens",
    "race_margin",
    "prompts",
}


class FixedShape:
    """The shape the config names."""

    def __init__(self, shape: TreeShape):
        self.initial = shape

    def shape_for(
        self,
        strategy: TreeDecoding,
        target: TargetModel,
        prompts: list[list[int]],
        gen: Generation,
        pad_id: int,
    ) -> TreeShape:
        return self.initial

    tunes = 0  # times a shape was tuned (never)

    def plan(self, prompts: list[list[int]]) -> None:
        """A fixed shape needs no look at the prompts."""

    def describe(self) -> dict:
        return {}


class AutoShape:
    """Measure, on held-out text of up to ``prompts`` prompts, the round costs and the
    draft's acceptance; rank the shapes of ``space`` by expected tokens/s; decode
    ``race_tokens`` tokens (spread over those prompts) with each of the ``race`` finalists
    (best predicted of each size class) and use the fastest (``race=1``: the best
    predicted, no race). Finalists within ``race_margin`` of the fastest count as tied with
    it, and the one with the fewest draft nodes wins."""

    initial = TreeShape((1,))

    def __init__(
        self,
        widths: Sequence[int] = DEFAULT_WIDTHS,
        max_depth: int = 6,
        max_nodes: int = 128,
        calib_tokens: int = 64,
        scale_costs: bool = False,
        race: int = 4,
        race_tokens: int = 64,
        race_margin: float = 0.03,
        prompts: int = 4,
    ):
        self.space = ShapeSpace(widths, max_depth, max_nodes)
        if not isinstance(scale_costs, bool):
            raise ValueError(f"decode.auto.scale_costs must be true or false, got {scale_costs!r}")
        self.scale_costs = scale_costs
        self.calib_tokens = positive_int("calib_tokens", calib_tokens)
        if self.calib_tokens < 2:
            raise ValueError(f"decode.auto.calib_tokens must be at least 2, got {calib_tokens}")
        self.race = positive_int("race", race)
        self.race_tokens = positive_int("race_tokens", race_tokens)
        self.race_margin = _fraction("race_margin", race_margin)
        self.prompts = positive_int("prompts", prompts)
        self.tuned: dict[tuple, dict] = {}
        self.upcoming: list[list[int]] = []  # the run's prompts, when it announced them

    @property
    def tunes(self) -> int:
        """Shapes tuned so far (one per key)."""
        return len(self.tuned)

    def plan(self, prompts: list[list[int]]) -> None:
        """The prompts the run will decode: calibration may use those of a decode's bucket."""
        self.upcoming = list(prompts)

    def shape_for(
        self,
        strategy: TreeDecoding,
        target: TargetModel,
        prompts: list[list[int]],
        gen: Generation,
        pad_id: int,
    ) -> TreeShape:
        """The tuned shape for this decode; tunes first when none fits."""
        key = _key(target, prompts, gen)
        if key not in self.tuned:
            if gen.max_new_tokens < MIN_TUNED_TOKENS:
                return self._nearest(key, strategy.shape)
            from longspec.autoshape.tune import tune  # imports the decoding strategies

            groups = calibration_groups(prompts, self.upcoming, self.prompts)
            self.tuned[key] = tune(strategy, target, groups, gen, pad_id, self)
        return TreeShape(self.tuned[key]["shape"])

    def _nearest(self, key: tuple, default: TreeShape) -> TreeShape:
        same = [k for k in self.tuned if k[:2] == key[:2]]  # same target and batch size
        if not same:
            return default
        best = min(same, key=lambda k: abs(k[2].bit_length() - key[2].bit_length()))
        return TreeShape(self.tuned[best]["shape"])

    def describe(self) -> dict:
        return {"tree_auto": list(self.tuned.values())}


def _fraction(name: str, value: object) -> float:
    """``value`` as a float in [0, 1), or a one-line ValueError naming the setting."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ValueError(f"decode.auto.{name} must be a number in [0, 1), got {value!r}")
    return float(value)


def _key(target: TargetModel, prompts: list[list[int]], gen: Generation) -> tuple:
    """(target, batch, prompt bucket, temperature, top_p)."""
    return (id(target), len(prompts), _bucket(prompts), gen.temperature, gen.top_p)


def _bucket(prompts: list[list[int]]) -> int:
    """The longest prompt's length rounded up to a power of two."""
    return 1 << (max(len(p) for p in prompts) - 1).bit_length()


def calibration_groups(
    batch: list[list[int]], upcoming: list[list[int]], count: int
) -> list[list[list[int]]]:
    """The batch about to be decoded, then batches of its size made of the run's prompts
    (``upcoming``) of its bucket that it does not hold, in order: at most ``count`` prompts
    in all (whole batches; the decode's own batch always)."""
    size, bucket = len(batch), _bucket(batch)
    others = [p for p in upcoming if p not in batch and _bucket([p]) == bucket]
    groups = [batch]
    while len(others) >= size and (len(groups) + 1) * size <= count:
        groups.append(others[:size])
        others = others[size:]
    return groups


def shape_policy(
    tree_shape: Sequence[int] | str, auto: Mapping[str, Any] | None
) -> FixedShape | AutoShape:
    """``decode.tree_shape`` (and ``decode.auto``) -> FixedShape or AutoShape."""
    if isinstance(tree_shape, str):
        if tree_shape != "auto":
            raise ValueError(
                "decode.tree_shape must be a list of nodes per level (e.g. [4,16,16,16,16]) "
                f"or auto, got {tree_shape!r}"
            )
        settings = dict(auto or {})
        unknown = sorted(set(settings) - AUTO_SETTINGS)
        if unknown:
            raise ValueError(
                f"decode.auto.{unknown[0]} is not a setting; use {', '.join(sorted(AUTO_SETTINGS))}"
            )
        return AutoShape(**settings)
    return FixedShape(TreeShape(tree_shape))
