"""Resuming a run dir (``resume=true``): the config a run is saved under, whether a run dir
holds a run of the same config, and the summary of one that already finished."""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from longspec.redact import redact_config
from longspec.results import read_json

RUN_CONFIG = "run_config.json"  # the job's resolved, redacted config, written at its start
# Settings a resumed run may change: they do not change what a finished sample contains.
RESUME_FREE = ("resume", "warmup", "logger", "batch_size", "data.num_samples", "resources")
# Settings a finished run is reported again under: they change neither its samples nor timings.
FINISHED_FREE = ("resume", "logger")


def saved_config(cfg: DictConfig) -> dict:
    """The resolved config as it is written to files: secrets redacted, JSON types."""
    config = redact_config(OmegaConf.to_container(cfg, resolve=True))
    return json.loads(json.dumps(config, default=str))


def config_diff(
    old: Mapping[str, Any], new: Mapping[str, Any], ignore: Collection[str] = ()
) -> list[str]:
    """Dotted keys whose values differ (keys under ``ignore`` are skipped)."""
    a, b = _flatten(old), _flatten(new)
    keys = sorted(set(a) | set(b))
    return [k for k in keys if a.get(k) != b.get(k) and not any(_under(k, i) for i in ignore)]


def _under(key: str, prefix: str) -> bool:
    return key == prefix or key.startswith(prefix + ".")


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj:
        flat: dict[str, Any] = {}
        for k, v in obj.items():
            flat.update(_flatten(v, f"{prefix}{k}."))
        return flat
    return {prefix.rstrip("."): obj}


def check_resumable(out: Path, config: dict) -> None:
    """ValueError when the run dir holds a run of another config (results would mix)."""
    previous = read_json(out / RUN_CONFIG)
    if previous is None:
        summary = read_json(out / "summary.json")
        previous = summary.get("config") if isinstance(summary, dict) else None
    if not isinstance(previous, dict):
        return
    diff = config_diff(previous, config, ignore=RESUME_FREE)
    if diff:
        key = diff[0]
        old, new = _flatten(previous).get(key), _flatten(config).get(key)
        raise ValueError(
            f"resume=true but {out} holds a run with another config ({key}: {old!r} there, "
            f"{new!r} now); resume with the same settings or choose a new hydra.run.dir"
        )


def finished_summary(out: Path, config: dict) -> dict | None:
    """The summary of a finished run of the same config in ``out``, else None."""
    summary = read_json(out / "summary.json")
    if not isinstance(summary, dict) or not isinstance(summary.get("config"), dict):
        return None
    if config_diff(summary["config"], config, ignore=FINISHED_FREE):
        return None
    return summary
