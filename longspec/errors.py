"""Bad input ends a run with one clear line and a non-zero exit, not a traceback."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from typing import Any

from longspec.models.glide_io import DraftMismatchError

log = logging.getLogger("longspec")

# Errors that mean "the user asked for something wrong"; anything else is a bug and keeps
# its traceback.
USER_ERRORS: tuple[type[BaseException], ...] = (
    ValueError,
    FileNotFoundError,
    PermissionError,
    DraftMismatchError,
)


def exit_on_user_error(fn: Callable[..., int], *args: Any) -> int:
    """Run fn; on a user error print ``error: <message>`` and exit 2 (trace with
    HYDRA_FULL_ERROR=1)."""
    try:
        return fn(*args)
    except USER_ERRORS as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
