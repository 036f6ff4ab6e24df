"""The race: decode with each finalist shape and keep the one that was fastest.

The cost model and the replayed acceptance rank every shape of the space, but both are
estimates: the acceptance comes from a short calibration and the costs from parts timed
alone. Shapes of similar size are ranked by the same errors, so the finalists are the
best predicted shape of each size class (draft nodes 1, 2-3, 4-7, 8-15, ...), and each of
them decodes the held-out calibration text for real (every calibration batch in turn),
timed as the decode loop runs. The winner is the one with the most tokens/s, but a
finalist within a margin of it (finalists often race within 1-3% of each other, and the
same shape's race timing moved by up to 12% between H200 runs) counts as tied, and among
tied finalists the one with the fewest draft nodes wins: its speed depends least on how
much is accepted, and acceptance on the calibration text is what carries over worst to
the text decoded next.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from longspec.autoshape.search import Choice
from longspec.decoding.sampling import Generation
from longspec.metrics import PhaseTimer
from longspec.models.target import TargetModel

if TYPE_CHECKING:
    from longspec.decoding.glide import TreeDecoding

WARMUP_TOKENS = 4  # untimed decode per finalist on a GPU: captures its graphs


@dataclass(frozen=True)
class Lap:
    """A finalist's prediction and what its real decode measured."""

    choice: Choice
    tokens: int  # new tokens of every row
    seconds: float  # decode time (prefill excluded, as in the run summary)
    forwards: int  # target forwards of every row, prefill included

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / max(self.seconds, 1e-12)

    def as_dict(self) -> dict:
        return {
            "shape": list(self.choice.shape),
            "predicted_tokens_per_s": round(self.choice.tokens_per_s, 2),
            "predicted_tokens_per_round": round(self.choice.tokens_per_round, 3),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "tau": round(self.tokens / max(self.forwards, 1), 3),
        }


def size_class(shape: tuple[int, ...]) -> int:
    """0 for no draft, then 1 + floor(log2(draft nodes)): 1 | 2-3 | 4-7 | 8-15 | ..."""
    return sum(shape).bit_length()


def finalists(ranked: list[Choice], count: int) -> list[Choice]:
    """The best predicted shape of each size class, best first, at most ``count``."""
    seen: set[int] = set()
    out = []
    for choice in ranked:
        group = size_class(choice.shape)
        if group not in seen:
            seen.add(group)
            out.append(choice)
        if len(out) == count:
            break
    return out


def race(
    strategy: TreeDecoding,
    target: TargetModel,
    groups: list[list[list[int]]],
    gen: Generation,
    pad_id: int,
    choices: list[Choice],
    tokens: int,
) -> list[Lap]:
    """Decode ``tokens`` new tokens of each batch of prompts in ``groups`` (EOS ignored) with
    each choice's shape and the strategy's draft; the laps (totals over the groups) in the
    order of ``choices``. A lap counts every token its rounds committed, also those past
    the budget that the last round of a row produced and the decode then dropped: short
    decodes would otherwise charge deep trees for a round they paid in full."""
    timed = Generation(tokens, (), gen.temperature, gen.top_p, gen.seed)
    laps = []
    for choice in choices:
        runner = _runner(strategy, choice.shape)
        if target.graphs is not None:  # graph keys do not name the shape: capture anew
            target.graphs.clear()
            warm = replace(timed, max_new_tokens=WARMUP_TOKENS)
            runner.generate(target, groups[0], warm, pad_id)
        timer = PhaseTimer(target.device)
        rows = [
            row for group in groups for row in runner.generate(target, group, timed, pad_id, timer)
        ]
        new = sum(1 + sum(r.accept_lengths) for r in rows)  # the prefill's token + rounds
        forwards = sum(r.target_forwards for r in rows)
        laps.append(Lap(choice, new, timer.decode_seconds(), forwards))
    if target.graphs is not None:
        target.graphs.clear()
    return laps


def winner(laps: list[Lap], margin: float) -> Lap:
    """The lap with the fewest draft nodes among those within ``margin`` (a fraction) of
    the most tokens/s; ties on nodes go to the faster."""
    fastest = max(lap.tokens_per_s for lap in laps)
    tied = [lap for lap in laps if lap.tokens_per_s >= fastest * (1 - margin)]
    return min(tied, key=lambda lap: (sum(lap.choice.shape), -lap.tokens_per_s))


def _runner(strategy: TreeDecoding, shape: tuple[int, ...]) -> TreeDecoding:
    """A fixed-shape copy of the strategy: same draft, window and draft vocabulary."""
    from longspec.decoding.glide import TreeDecoding  # glide imports this package

    runner = TreeDecoding(strategy.layer, list(shape), strategy.window)
    runner.vocab_ids = strategy.vocab_ids
    return runner
