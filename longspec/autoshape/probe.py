"""Calibration: decode held-out prompts with a wide beam tree, recording every round.

The probe is a :class:`TreeDecoding` of the widest, deepest shape of the search space. Each
round it writes, into device buffers indexed by a device counter (so a round can still be
one captured CUDA graph), the tree, the draft's W most likely children of every internal
node with their log-probs, and the target's choice after every node. Right after the first
prefill it also times verification and draft levels at the prompt's length.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from longspec.autoshape.acceptance import Rounds
from longspec.autoshape.costs import CostModel, measure
from longspec.bench.timing import Timing
from longspec.decoding.glide import TreeDecoding
from longspec.decoding.proposal import Proposal
from longspec.decoding.sampling import Generation
from longspec.decoding.state import DecodeState
from longspec.metrics import PhaseTimer
from longspec.models.glide import GlideLayer
from longspec.models.target import TargetModel
from longspec.tree import TreeShape
from longspec.verify import Acceptance


class RoundLog:
    """Device buffers for up to ``rounds`` rounds of a (width,) * depth tree, batch rows."""

    def __init__(self, rounds: int, batch: int, shape: TreeShape, device: torch.device):
        width = shape.levels[0]
        nodes, internal = shape.num_nodes + 1, 1 + width * (shape.depth - 1)
        long = {"dtype": torch.long, "device": device}
        self.tokens = torch.zeros(rounds, batch, nodes, **long)  # (R, B, N+1)
        self.parents = torch.zeros(rounds, batch, nodes, **long)
        self.choice = torch.zeros(rounds, batch, nodes, **long)
        self.kid_tok = torch.zeros(rounds, batch, internal, width, **long)  # (R, B, M, W)
        self.kid_lp = torch.zeros(rounds, batch, internal, width, device=device)
        self.stage_tok = torch.zeros(batch, internal, width, **long)  # (B, M, W) this round
        self.stage_lp = torch.zeros(batch, internal, width, device=device)
        self.count = torch.zeros(1, **long)  # rounds recorded (device side: graph-safe)
        self.width = width

    @property
    def batch(self) -> int:
        return self.tokens.shape[1]

    def stage(self, level: int, logp: Tensor) -> None:
        """Keep the W most likely children of the n nodes of ``level``; logp (B, n, V)."""
        top = logp.topk(self.width, dim=-1)  # (B, n, W), descending
        start = 0 if level == 0 else 1 + self.width * (level - 1)
        end = start + logp.shape[1]
        self.stage_tok[:, start:end] = top.indices
        self.stage_lp[:, start:end] = top.values

    def record(self, tokens: Tensor, parents: Tensor, choice: Tensor) -> None:
        """Append the round: tree tokens/parents (B, N+1), target choices (B, N+1)."""
        slot = self.count % self.tokens.shape[0]  # (1,)
        rows = (
            (self.tokens, tokens),
            (self.parents, parents),
            (self.choice, choice),
            (self.kid_tok, self.stage_tok),
            (self.kid_lp, self.stage_lp),
        )
        for buf, value in rows:
            buf.index_copy_(0, slot, value[None])
        self.count += 1

    def rounds(self, per_row: list[int]) -> Rounds:
        """The first per_row[b] rounds of every row b, as host arrays."""
        host = [
            t.cpu().numpy()
            for t in (self.tokens, self.parents, self.kid_tok, self.kid_lp, self.choice)
        ]
        parts = [[a[:n, b] for b, n in enumerate(per_row)] for a in host]
        return Rounds.from_log(*(np.concatenate(p) for p in parts))


class ShapeProbe(TreeDecoding):
    """A wide beam tree that logs its rounds and, once, the device's costs."""

    def __init__(
        self,
        draft: GlideLayer,
        shape: TreeShape,
        rounds: int,
        window: int = 512,
        vocab_ids: Tensor | None = None,
    ):
        super().__init__(draft, shape.levels, window)
        self.vocab_ids = vocab_ids  # the tokens the tuned strategy's draft scores (None: all)
        self.rounds = rounds
        self.costs: CostModel | None = None
        self.log: RoundLog | None = None
        self.log_s = 0.0  # what recording adds to one of the probe's rounds

    def setup(self, target: TargetModel, batch: int) -> None:
        super().setup(target, batch)
        if self.log is None or self.log.batch != batch:
            self.log = RoundLog(self.rounds, batch, self.shape, target.device)
        self.log.count.zero_()

    def graph_state(self) -> list[Tensor]:
        return [*super().graph_state(), self.log.count]

    def absorb_prompt(self, state: DecodeState, ids: Tensor, lengths: Tensor) -> None:
        super().absorb_prompt(state, ids, lengths)
        if self.costs is None:  # the cache holds the prompt now: time the parts of a round
            device = self.target.device
            reps, warmup = (10, 3) if device.type == "cuda" else (3, 1)  # CPU: slow, steady
            nodes, width = self.max_nodes + 1, self.shape.levels[0]
            parts = (self.target, self.draft, self.dcache, state.cache, nodes, width)
            timing = Timing(device, reps=reps, warmup=warmup)
            self.costs = measure(*parts, timing)
            self.log_s = self._logging_seconds(state, timing)

    def _logging_seconds(self, state: DecodeState, timing: Timing) -> float:
        """Seconds that staging every level's children, the target's choices and the record
        add to a probe round; a real round does none of it, so calibration subtracts them.
        Timed like the rest (a CUDA graph on a GPU); the log is left as it was."""
        log, batch, n = self.log, self.log.batch, self.max_nodes + 1
        vocab = self.target.vocab_size
        device = self.target.device
        widths = [1, *self.shape.levels[:-1]]  # parents of each level
        logps = [torch.zeros(batch, w, vocab, device=device) for w in widths]  # (B, w, V)
        logits = torch.zeros(batch, n, vocab, device=device)  # (B, N+1, V)
        tree = torch.zeros(batch, n, dtype=torch.long, device=device)  # (B, N+1)

        def record(ids: Tensor) -> Tensor:
            for level, logp in enumerate(logps):
                log.stage(level, logp)
            log.record(ids, ids, _choice(logits, state))
            return log.count

        count = log.count.clone()
        key = ("autoshape-log", tuple(tree.shape), log.count.data_ptr())
        if state.gen.greedy:  # graphs hold no sampling (as in the decode loop)
            seconds = timing.median(lambda: self.target.run_static(key, record, tree))
        else:
            seconds = timing.median(lambda: record(tree))
        log.count.copy_(count)
        return seconds

    def _children_scores(self, level: int, scores: Tensor) -> None:
        self.log.stage(level, torch.log_softmax(self.draft.full_logits(scores), -1))  # (B, n, V)

    def accept(self, prop: Proposal, logits: Tensor, state: DecodeState) -> Acceptance:
        acc = super().accept(prop, logits, state)
        self.log.record(prop.tokens, prop.parents, _choice(logits, state))
        return acc


def _choice(logits: Tensor, state: DecodeState) -> Tensor:
    """(B, N+1, V) -> (B, N+1) the target's token after each node: its argmax when greedy,
    else one draw from the sampling distribution (what the lossless tree rule accepts)."""
    if state.gen.greedy:
        return logits.argmax(-1)
    probs = state.gen.probs(logits)  # (B, N+1, V)
    draws = torch.multinomial(probs.flatten(0, 1), 1, generator=state.generator)  # (B*(N+1), 1)
    return draws.view(probs.shape[:2])


def calibrate(
    probe: ShapeProbe,
    target: TargetModel,
    groups: list[list[list[int]]],
    gen: Generation,
    pad_id: int,
    scale_costs: bool = False,
) -> tuple[Rounds, CostModel]:
    """Decode each batch of prompts in ``groups`` with the probe (EOS ignored); the rounds
    of all of them and the cost model, whose parts are fitted to the probe's timed rounds
    by a factor (``scale_costs``) or by a fixed overhead per round (see
    ``longspec.autoshape.costs``). The parts are timed once, at the first batch's length;
    the fit averages the rounds of every batch (prompts of one length bucket)."""
    calib = Generation(probe.rounds - 1, (), gen.temperature, gen.top_p, gen.seed)
    if target.graphs is not None:
        probe.generate(target, groups[0], calib, pad_id)  # capture the graphs, untimed
    parts, seconds, steps = [], 0.0, 0
    for prompts in groups:
        timer = PhaseTimer(target.device)
        rows = probe.generate(target, prompts, calib, pad_id, timer)
        per_row = [r.target_forwards - 1 for r in rows]  # rounds after the prefill
        parts.append(probe.log.rounds(per_row))
        seconds += timer.decode_seconds()
        steps += max(max(per_row), 1)
    round_s = seconds / steps - probe.log_s
    fit = probe.costs.with_scale if scale_costs else probe.costs.with_overhead
    return Rounds.concat(parts), fit(round_s, probe.shape.levels)
