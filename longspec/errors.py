"""Bad input ends a run with one clear line and a non-zero exit, not a traceback.

Three kinds of error get that treatment:

- user errors: the config or an input file is wrong (``ValueError`` and friends);
- :class:`RunError`: the run cannot go on for a reason its message explains (the GPU ran
  out of memory, the logits went NaN);
- :class:`Interrupted`: SIGTERM (a scheduler, ``kill``); exit status 128 + signal.

Finished samples are already on disk in every case; ``resume=true`` continues.

Anything else is a bug and keeps its traceback. ``HYDRA_FULL_ERROR=1`` shows the trace of
every error. In a multirun the error of a job is raised, not turned into an exit: the sweep
records the job as failed and goes on (see ``longspec.callbacks.RecordFailures``).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from longspec.models.glide_io import DraftMismatchError

log = logging.getLogger("longspec")


class RunError(RuntimeError):
    """The run stopped for a reason its one-line message explains."""

    exit_code = 2


class OutOfMemory(RunError):
    """The GPU ran out of memory; the message gives the sizes and what to lower."""


class NonFiniteLogits(RunError):
    """NaN or inf logits: the sample stops; the message names the sample and the step."""

    def __init__(self, message: str, *, sample_id: str | None, step: int, row: int = 0):
        super().__init__(message)
        self.sample_id = sample_id
        self.step = step
        self.row = row


class InvalidOutput(RunError):
    """A decoder returned ids outside the vocabulary (a bug, reported with the sample)."""


class Interrupted(SystemExit):
    """SIGTERM: the run stops; ``resume=true`` continues it.

    A ``SystemExit`` (not an ``Exception``), so that in a sweep it ends the whole sweep rather
    than being recorded as one failed job while the next one starts.
    """

    def __init__(self, message: str, signum: int):
        super().__init__(128 + signum)
        self.message = message
        self.exit_code = 128 + signum

    def __str__(self) -> str:
        return self.message


# Errors that mean "the user asked for something wrong" (or the run cannot go on, and says
# why); anything else is a bug and keeps its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    DraftMismatchError,
    RunError,
    Interrupted,
)


def one_line(err: BaseException) -> str:
    """The error's message on one line."""
    return " ".join(str(err).split()) or type(err).__name__


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra multirun (sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        return HydraConfig.get().mode == RunMode.MULTIRUN
    except (ImportError, ValueError):  # not under @hydra.main
        return False


def exit_on_user_error(fn: Callable[..., int], *args: Any) -> int:
    """Run fn; on a user error print ``error: <message>`` and exit 2 (or 128 + signal).

    In a multirun job the error is raised instead, so that Hydra records the job as failed
    (``longspec.callbacks.RecordFailures`` writes its ``error.txt``) and the sweep goes on;
    SIGTERM still exits, ending the sweep. ``HYDRA_FULL_ERROR=1`` raises too (full trace).
    """
    try:
        return fn(*args)
    except USER_ERRORS as err:
        interrupted = isinstance(err, Interrupted)
        if not interrupted and (in_multirun() or os.environ.get("HYDRA_FULL_ERROR") == "1"):
            raise
        print(f"error: {one_line(err)}", file=sys.stderr)
        sys.exit(getattr(err, "exit_code", 2))
