"""Cheap guards used while decoding.

:func:`finite_rows` + :func:`raise_if_not_finite` (the decode loop, no extra host sync) or
:func:`check_finite` stop a sample whose logits hold NaN or inf, and
:func:`check_output_ids` a sample whose output holds ids outside the vocabulary.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from longspec.errors import InvalidOutput, NonFiniteLogits
from longspec.rules import is_int


def finite_rows(logits: torch.Tensor) -> torch.Tensor:
    """(B,) bool on the logits' device, True where a row's logits are all finite.

    No host sync: inside a captured graph, return it with the round's output and test it on
    the host with :func:`raise_if_not_finite` after the round's one device-to-host copy.
    """
    finite = torch.isfinite(logits)
    return finite.flatten(1).all(1) if logits.dim() > 1 else finite.all()[None]


def check_finite(
    logits: torch.Tensor, sample_id: str | Sequence[str] | None = None, step: int = 0
) -> None:
    """Raise :class:`NonFiniteLogits` if ``logits`` holds NaN or inf (one host sync).

    ``logits``: (B, ...) with one row per sample (or unbatched). ``sample_id``: the sample's
    id, one id per row, or None (the error then names the batch row; the runner re-raises it
    with the sample's id). ``step``: the decode step (0 = prefill, then the round number).
    """
    if bool(torch.isfinite(logits).all()):
        return
    flags = finite_rows(logits).tolist()
    row = flags.index(False)
    bad = logits[row] if logits.dim() > 1 else logits
    nan, inf = int(torch.isnan(bad).sum()), int(torch.isinf(bad).sum())
    raise _non_finite(_row_id(sample_id, row), row, step, nan, inf, bad.numel(), logits.dtype)


def raise_if_not_finite(
    flags: Sequence[bool], sample_id: str | Sequence[str] | None = None, step: int = 0
) -> None:
    """Host side of :func:`finite_rows`: raise for the first row whose flag is False."""
    for row, ok in enumerate(flags):
        if not ok:
            raise _non_finite(_row_id(sample_id, row), row, step, None, None, None, None)


def _row_id(sample_id: str | Sequence[str] | None, row: int) -> str | None:
    if sample_id is None or isinstance(sample_id, str):
        return sample_id
    return str(sample_id[row])


def _non_finite(
    sample_id: str | None,
    row: int,
    step: int,
    nan: int | None,
    inf: int | None,
    total: int | None,
    dtype: torch.dtype | None,
) -> NonFiniteLogits:
    what = f"{nan} NaN and {inf} inf of {total} values" if total is not None else "NaN or inf"
    who = f"sample {sample_id}" if sample_id is not None else f"batch row {row}"
    hint = "; try dtype=bfloat16 or dtype=float32" if dtype == torch.float16 else ""
    return NonFiniteLogits(
        f"non-finite logits ({what}) for {who} at decode step {step}{hint}",
        sample_id=sample_id,
        step=step,
        row=row,
    )


def with_sample_id(err: NonFiniteLogits, sample_id: str) -> NonFiniteLogits:
    """The same error naming the sample instead of the batch row."""
    message = str(err).replace(f"batch row {err.row}", f"sample {sample_id}", 1)
    return NonFiniteLogits(message, sample_id=sample_id, step=err.step, row=err.row)


def check_output_ids(output_ids: Sequence[Any], vocab_size: int | None, sample_id: str) -> None:
    """Raise :class:`InvalidOutput` unless every id is an int in [0, vocab_size)."""
    for pos, tok in enumerate(output_ids):
        if not is_int(tok) or tok < 0 or (vocab_size is not None and tok >= vocab_size):
            raise InvalidOutput(
                f"sample {sample_id}: output id {tok!r} at position {pos} is not a token id "
                f"in [0, {vocab_size})"
            )
