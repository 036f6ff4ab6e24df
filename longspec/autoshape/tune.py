"""Tune a beam tree's shape for this device, model pair and prompts (``tree_shape=auto``)."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING

from longspec.autoshape.acceptance import Rounds, mean_accepted, rank_profile
from longspec.autoshape.costs import CostModel
from longspec.autoshape.probe import ShapeProbe, calibrate
from longspec.autoshape.race import Lap, finalists, race, winner
from longspec.autoshape.search import Choice, rank
from longspec.decoding.loop import reserve_cache
from longspec.decoding.sampling import Generation
from longspec.models.target import TargetModel

if TYPE_CHECKING:
    from longspec.autoshape.policy import AutoShape
    from longspec.decoding.glide import TreeDecoding

log = logging.getLogger(__name__)


def tune(
    strategy: TreeDecoding,
    target: TargetModel,
    groups: list[list[list[int]]],
    gen: Generation,
    pad_id: int,
    policy: AutoShape,
) -> dict:
    """Calibrate on held-out text of every batch of ``groups`` (the decode's own first)
    with the strategy's draft, rank policy.space by expected tokens/s, race the finalists
    on the same text; the winner with what it expected and measured, the race, the
    runners-up, the costs and acceptance profile."""
    started = time.perf_counter()
    space = policy.space
    probe = ShapeProbe(
        strategy.layer, space.probe, policy.calib_tokens + 1, strategy.window, strategy.vocab_ids
    )
    # One pooled cache for the probe and the decode after it (their graphs stay valid),
    # sized for the longest prompt of any group.
    need = replace(gen, max_new_tokens=max(gen.max_new_tokens, policy.calib_tokens))
    longest = max((p for group in groups for p in group), key=len)
    reserve_cache(target, [longest] * len(groups[0]), need, space.probe.num_nodes)
    calib_groups = [held_out(group, policy.calib_tokens) for group in groups]
    rounds, costs = calibrate(probe, target, calib_groups, gen, pad_id, policy.scale_costs)
    if target.graphs is not None:
        target.graphs.clear()  # the probe's graphs and those of the timings
    accepted = mean_accepted(rounds, space.extensions)
    ranked = rank(accepted, costs, top=len(accepted))
    laps = _race_finalists(strategy, target, groups, calib_groups, gen, pad_id, policy, ranked)
    result = report(ranked, laps, rounds, costs, groups, policy.race_margin) | {
        "tune_s": round(time.perf_counter() - started, 2)
    }
    _log_choice(result, target, rounds.count, len(laps))
    return result


def _race_finalists(
    strategy: TreeDecoding,
    target: TargetModel,
    groups: list[list[list[int]]],
    calib_groups: list[list[list[int]]],
    gen: Generation,
    pad_id: int,
    policy: AutoShape,
    ranked: list[Choice],
) -> list[Lap]:
    """Laps of the policy.race best-ranked shapes on the calibration text (none when
    policy.race <= 1), each run over as many tokens as every group can give."""
    if policy.race <= 1:
        return []
    finals = finalists(ranked, policy.race)
    share = max(-(-policy.race_tokens // len(groups)), 2)  # per group; >= 1 round
    tokens = min(
        race_length(share, group, calib, gen)
        for group, calib in zip(groups, calib_groups, strict=True)
    )
    return race(strategy, target, calib_groups, gen, pad_id, finals, tokens)


def _log_choice(result: dict, target: TargetModel, n_rounds: int, n_laps: int) -> None:
    log.info(
        "tree_shape=auto: %s for %d-token prompts on %s (expects %.2f tokens/round, "
        "%.1f tokens/s; %d calibration rounds over %d prompts, %d finalists raced; "
        "tuned in %.1f s)",
        result["shape"],
        result["prompt_tokens"],
        target.device,
        result["predicted_tokens_per_round"],
        result["predicted_tokens_per_s"],
        n_rounds,
        result["calibration_prompts"],
        n_laps,
        result["tune_s"],
    )


def held_out(prompts: list[list[int]], tokens: int) -> list[list[int]]:
    """Each prompt without its last ``tokens`` tokens (at most half of it): calibration
    decodes text like the prompt's at nearly its length, but not the continuation that
    is about to be decoded (and timed) with the shape it picks."""
    return [p[: max(len(p) - tokens, (len(p) + 1) // 2)] for p in prompts]


def race_length(
    wanted: int, prompts: list[list[int]], calib_prompts: list[list[int]], gen: Generation
) -> int:
    """Tokens each finalist decodes from the held-out prompts: ``wanted``, but never past
    the end the real decode reaches (so the race fits the cache and the context)."""
    held = min(len(p) - len(c) for p, c in zip(prompts, calib_prompts, strict=True))
    return max(1, min(wanted, held + gen.max_new_tokens))


def report(
    ranked: list[Choice],
    laps: list[Lap],
    rounds: Rounds,
    costs: CostModel,
    groups: list[list[list[int]]],
    margin: float = 0.0,
) -> dict:
    """The summary entry: the chosen shape (the race's winner, with ``margin`` as in
    ``race.winner``; else the best predicted) with its predictions, then how it was found
    (``groups``: the calibration batches, the decode's own first)."""
    best = winner(laps, margin).choice if laps else ranked[0]
    return {
        "shape": list(best.shape),
        "predicted_tokens_per_round": round(best.tokens_per_round, 3),
        "predicted_tokens_per_s": round(best.tokens_per_s, 2),
        "predicted_round_ms": round(best.round_s * 1e3, 3),
        "prompt_tokens": max(len(p) for p in groups[0]),
        "batch": len(groups[0]),
        "calibration_prompts": sum(len(group) for group in groups),
        "calibration_rounds": rounds.count,
        "race": [lap.as_dict() for lap in laps],
        "predicted_best": [c.as_dict() for c in ranked[:6]],  # the model's own ranking
        "acceptance_profile": rank_profile(rounds),
        "costs": costs.as_dict(),
    }
