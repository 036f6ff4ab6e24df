"""transformers ``generate`` as a method: the paper's "Vanilla HF" baseline, and
prompt-lookup decoding (``prompt_lookup_num_tokens``) as an outside reference."""

from __future__ import annotations

import time

import torch

from longspec.decoding.sampling import Generation
from longspec.decoding.state import RowResult
from longspec.metrics import PhaseTimer, synchronize
from longspec.models.target import TargetModel


class HFGenerate:
    """Runs ``target.hf.generate`` one prompt at a time.

    generate() does not expose its prefill, so prefill time is measured as a run with one
    new token, and decode time as the full run minus that. Target forward passes are
    counted by a hook on the model during the full run (prompt lookup verifies several
    tokens per pass, so its tau is measured, not assumed).
    """

    needs_draft = False

    def __init__(self, prompt_lookup_num_tokens: int | None = None):
        self.prompt_lookup_num_tokens = prompt_lookup_num_tokens

    def generate(
        self,
        target: TargetModel,
        prompts: list[list[int]],
        gen: Generation,
        pad_id: int,
        timer: PhaseTimer | None = None,
    ) -> list[RowResult]:
        return [self._one(target, p, gen, pad_id, timer) for p in prompts]

    def _one(self, target, prompt, gen, pad_id, timer) -> RowResult:
        ids = torch.tensor([prompt], device=target.device)  # (1, T)
        first = self._timed(target, ids, gen, pad_id, 1)[1]
        out, total, forwards = self._timed(target, ids, gen, pad_id, gen.max_new_tokens)
        if timer is not None and timer.enabled:
            timer.seconds["prefill"] += first
            timer.seconds["decode"] += max(total - first, 0.0)
        new = out[0, ids.shape[1] :].tolist()
        row = RowResult([], 0, [])
        for tok in new:  # generate pads finished rows; keep up to the first EOS
            row.output_ids.append(tok)
            if tok in gen.eos_ids:
                break
        row.target_forwards = forwards  # the prefill's pass included, as the loop counts
        return row

    def _timed(self, target, ids, gen, pad_id, n_new) -> tuple[torch.Tensor, float, int]:
        """(output ids (1, T + new), seconds, forward passes of the target)."""
        torch.manual_seed(gen.seed)
        kwargs = dict(
            max_new_tokens=n_new,
            min_new_tokens=0,
            do_sample=not gen.greedy,
            eos_token_id=list(gen.eos_ids),
            pad_token_id=pad_id,
            attention_mask=torch.ones_like(ids),
        )
        if not gen.greedy:
            kwargs.update(temperature=gen.temperature, top_p=gen.top_p, top_k=0)
        if self.prompt_lookup_num_tokens:
            kwargs["prompt_lookup_num_tokens"] = self.prompt_lookup_num_tokens
        calls = [0]
        hook = target.hf.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
        try:
            synchronize(target.device)
            start = time.perf_counter()
            with torch.inference_mode():
                out = target.hf.generate(ids, **kwargs)
            synchronize(target.device)
            return out, time.perf_counter() - start, calls[0]
        finally:
            hook.remove()
