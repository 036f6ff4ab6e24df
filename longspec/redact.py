"""Secret redaction: credentials are removed from a config before it is written anywhere
(``run_config.json``, a W&B run's config)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

REDACTED = "<redacted>"
# Environment variables whose values count as secrets, by name.
SECRET_ENV_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LEN = 8  # shorter values ("1", "true") are flags, not credentials
# Key names that hold credentials ("max_new_tokens" and "pad_token_id" are not secrets).
SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|secret|password|passwd|credentials?|"
    r"(access|auth|hf|hub|api|bearer|wandb|github|gh)?[_\-]?token)$",
    re.IGNORECASE,
)
# Values shaped like well-known tokens, wherever they appear.
SECRET_VALUE = re.compile(
    r"(hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|gh[pousr]_[A-Za-z0-9]{20,}|"
    r"github_pat_[A-Za-z0-9_]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}|local-[0-9a-f]{40})"
)


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """Values of environment variables whose names say they are credentials
    (``*TOKEN*``, ``*KEY*``, ``*SECRET*``, ...), longest first; short values are ignored."""
    env = os.environ if env is None else env
    values = {v for k, v in env.items() if SECRET_ENV_NAME.search(k) and len(v) >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)


def redact(obj: Any, secrets: Sequence[str] | None = None) -> Any:
    """A copy of ``obj`` (dicts/lists/scalars) with credentials replaced by ``<redacted>``:
    values under secret-looking keys, token-shaped strings and the given secret values
    (by default those of ``secret_values()``) wherever they occur."""
    secrets = secret_values() if secrets is None else secrets
    if isinstance(obj, Mapping):
        return {k: _redact_item(str(k), v, secrets) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v, secrets) for v in obj]
    if isinstance(obj, str):
        return _redact_string(obj, secrets)
    return obj


def redact_config(obj: Any, env: Mapping[str, str] | None = None) -> Any:
    """``redact`` with the secret values of ``env`` (default: this process's environment)."""
    return redact(obj, secret_values(env))


def _redact_string(value: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        value = value.replace(secret, REDACTED)
    return SECRET_VALUE.sub(REDACTED, value)


def _redact_item(key: str, value: Any, secrets: Sequence[str]) -> Any:
    if SECRET_KEY.search(key) and value not in (None, "") and not isinstance(value, Mapping):
        return REDACTED
    return redact(value, secrets)
