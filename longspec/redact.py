"""Secret redaction: :func:`redact_config` removes credentials from a config before it is
written anywhere."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

from longspec.tracking import redact

# Environment variables whose values count as secrets, by name.
SECRET_ENV_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 8  # shorter values ("1", "true") are flags, not credentials


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they are credentials
    (``*TOKEN*``, ``*KEY*``, ``*SECRET*``, ...), longest first; short values are ignored."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if SECRET_ENV_NAME.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact_config(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """A copy of a config container with credentials replaced by ``<redacted>``: values under
    secret-looking keys, token-shaped strings, and the values of secret environment variables
    wherever they occur."""
    return redact(obj, secret_values(env))
