"""Experiment trackers behind one small contract; results files stay the source of truth.

``logger=none`` writes nothing beyond ``results.jsonl``/``summary.json`` (the runner's job).
``logger=wandb`` mirrors the same numbers into one W&B run per job. W&B is a convenience:
any failure inside it (import, init, logging, finish) becomes a warning and the job goes on.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from longspec.redact import redact

log = logging.getLogger(__name__)

# Per-sample columns of the W&B table (record field -> column); long fields stay in files.
SAMPLE_COLUMNS = (
    "id",
    "prompt_tokens",
    "new_tokens",
    "target_forwards",
    "tau",
    "tokens_per_s",
    "prefill_s",
    "decode_s",
    "text",
)
# Summary fields copied into the W&B run summary when present.
SUMMARY_METRICS = (
    "n_samples",
    "new_tokens",
    "target_forwards",
    "tau",
    "tokens_per_s",
    "end_to_end_tokens_per_s",
    "decode_s",
    "prefill_s",
    "speedup",
    "peak_memory_bytes",
    "draft_cache_bytes",
    "device",
    "device_name",
)
TEXT_LIMIT = 2000  # characters of generated text kept per table row


class Tracker(Protocol):
    def start(self, config: dict, names: dict[str, str], job_dir: Path) -> None: ...

    def log_sample(self, record: dict) -> None: ...

    def finish(self, summary: dict | None, failed: bool = False) -> None: ...


class NoLogger:
    """``logger=none``: nothing beyond results.jsonl and summary.json."""

    def start(self, config: dict, names: dict[str, str], job_dir: Path) -> None:
        return None

    def log_sample(self, record: dict) -> None:
        return None

    def finish(self, summary: dict[str, Any] | None, failed: bool = False) -> None:
        return None


# ---------------------------------------------------------------------------------------------
# Run identity (group, name, mode)


def _hydra_cfg() -> Any | None:
    """The running Hydra config, or None outside ``@hydra.main``."""
    try:
        from hydra.core.hydra_config import HydraConfig

        return HydraConfig.get()
    except (ImportError, ValueError):
        return None


def sweep_group(hydra_cfg: Any | None) -> str | None:
    """The sweep a multirun job belongs to: its sweep dir's name (with the parent's name
    when Hydra's default ``<date>/<time>`` layout makes the name alone ambiguous)."""
    from hydra.types import RunMode

    if hydra_cfg is None or hydra_cfg.mode != RunMode.MULTIRUN:
        return None
    sweep = Path(str(hydra_cfg.sweep.dir))
    if re.fullmatch(r"[\d\-_:.]+", sweep.name):
        return f"{sweep.parent.name}_{sweep.name}"
    return sweep.name


def run_name(hydra_cfg: Any | None, names: Mapping[str, str]) -> str:
    """A readable name: the job's overrides (``model=x,decode=tree``), else its choices."""
    overrides = list(hydra_cfg.overrides.task) if hydra_cfg is not None else []
    if overrides:
        return ",".join(str(o) for o in overrides)
    parts = [names.get(k) for k in ("model", "decode", "data")]
    return "-".join(p for p in parts if p) or "longspec"


def resolve_mode(configured: str | None, env: Mapping[str, str] | None = None) -> str:
    """W&B mode: ``$WANDB_MODE`` when set; ``online`` when an API key is configured;
    otherwise the configured mode (``offline`` by default: no network needed)."""
    env = os.environ if env is None else env
    if env.get("WANDB_MODE"):
        return env["WANDB_MODE"]
    if env.get("WANDB_API_KEY"):
        return "online"
    return configured or "offline"


# ---------------------------------------------------------------------------------------------
# W&B-specific pieces (each small, each may raise; WandbLogger turns raises into warnings)


def _import_wandb() -> Any:
    import wandb

    return wandb


def init_run(wandb: Any, job_dir: Path, **kwargs: Any) -> Any:
    """Start a run whose files live in ``<job_dir>/wandb``."""
    job_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(dir=str(job_dir), reinit="finish_previous", **kwargs)


def console_settings(quiet: bool) -> dict[str, Any]:
    """``wandb.init(settings=...)``: with ``quiet`` W&B prints only its start lines, not
    the history and summary block at the end (``where_line`` says where the run went)."""
    return {"quiet": True} if quiet else {}


ONLINE_MODES = ("online", "run", "shared")  # W&B modes that sync as the run goes
OFFLINE_MODES = ("offline", "dryrun")  # modes that write a run dir for ``wandb sync``


def where_line(run: Any) -> str | None:
    """One line naming where a run went: its URL when it syncs, its local directory and the
    command that uploads it when offline; None otherwise (disabled, or the run does not
    say)."""
    settings = getattr(run, "settings", None)
    mode = getattr(settings, "mode", None)
    if mode in ONLINE_MODES and getattr(run, "url", None):
        return f"W&B run: {run.url}"
    sync_dir = getattr(settings, "sync_dir", None)
    if mode in OFFLINE_MODES and sync_dir:
        return f"W&B offline run: {sync_dir} (upload: wandb sync {sync_dir})"
    return None


def sample_row(record: Mapping[str, Any]) -> list[Any]:
    """One table row (SAMPLE_COLUMNS) from a results.jsonl record."""
    row = [record.get(c) for c in SAMPLE_COLUMNS]
    text_at = SAMPLE_COLUMNS.index("text")
    if isinstance(row[text_at], str):
        row[text_at] = row[text_at][:TEXT_LIMIT]
    if row[0] is not None:
        row[0] = str(row[0])
    return row


def sample_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Per-sample scalars logged as a step each (plots over samples)."""
    keys = ("tau", "tokens_per_s", "new_tokens", "decode_s", "prefill_s")
    return {f"sample/{k}": record[k] for k in keys if isinstance(record.get(k), int | float)}


def accept_hist_table(wandb: Any, accept_lengths: Iterable[int]) -> Any:
    """Counts of the tokens accepted per verification round, as a W&B table."""
    counts: dict[int, int] = {}
    for n in accept_lengths:
        counts[int(n)] = counts.get(int(n), 0) + 1
    table = wandb.Table(columns=["accept_length", "rounds"])
    for length in sorted(counts):
        table.add_data(length, counts[length])
    return table


def log_final(wandb: Any, run: Any, rows: list[list[Any]], accept_lengths: list[int]) -> None:
    """The per-sample table and the acceptance histogram (as a W&B histogram and table)."""
    table = wandb.Table(columns=list(SAMPLE_COLUMNS), data=rows)
    payload: dict[str, Any] = {"samples": table}
    if accept_lengths:
        payload["accept_length_hist"] = wandb.Histogram(accept_lengths)
        payload["accept_length_counts"] = accept_hist_table(wandb, accept_lengths)
    run.log(payload)


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The headline numbers of summary.json for the W&B run summary."""
    out = {k: summary[k] for k in SUMMARY_METRICS if summary.get(k) is not None}
    baseline = summary.get("baseline")
    if isinstance(baseline, Mapping) and baseline.get("tokens_per_s") is not None:
        out["baseline_tokens_per_s"] = baseline["tokens_per_s"]
    return out


class WandbLogger:
    """``logger=wandb``: one W&B run per job, its files inside the job dir.

    ``group`` defaults to the sweep (multirun) the job belongs to, ``job_type`` is the decode
    strategy and ``name`` the job's overrides. The config is logged resolved with credentials
    redacted. Any W&B error is only a warning (a failed init turns tracking off for the
    job); the runner's results files are never affected, and a started run is always
    finished, with exit code 1 when the job failed.
    """

    def __init__(
        self,
        project: str = "longspec",
        mode: str | None = "offline",
        group: str | None = None,
        tags: Sequence[str] = (),
        entity: str | None = None,
        name: str | None = None,
        quiet: bool = True,
        importer: Callable[[], Any] = _import_wandb,
    ):
        self.project = project
        self.quiet = quiet
        self.mode = mode
        self.group = group
        self.tags = list(tags or [])
        self.entity = entity
        self.name = name
        self._importer = importer
        self._wandb: Any = None
        self._run: Any = None
        self._rows: list[list[Any]] = []
        self._accept_lengths: list[int] = []
        self._warned: set[str] = set()

    @property
    def active(self) -> bool:
        return self._run is not None

    def _guard(self, what: str, fn: Callable[[], Any]) -> bool:
        """Run ``fn``; on any error warn (once per kind) and go on. True when it worked."""
        try:
            fn()
        except Exception as err:  # W&B must never break a job
            if what not in self._warned:
                self._warned.add(what)
                log.warning(
                    "W&B %s failed (%s: %s); results files are unaffected",
                    what,
                    type(err).__name__,
                    err,
                )
            return False
        return True

    def init_kwargs(self, config: dict, names: Mapping[str, str]) -> dict[str, Any]:
        """Arguments of ``wandb.init`` (minus ``dir``) for this job."""
        hydra_cfg = _hydra_cfg()
        return {
            "project": self.project,
            "entity": self.entity,
            "mode": resolve_mode(self.mode),
            "group": self.group or sweep_group(hydra_cfg),
            "job_type": names.get("decode"),
            "name": self.name or run_name(hydra_cfg, names),
            "tags": self.tags,
            "config": redact({**config, "choices": dict(names)}),
            "settings": console_settings(self.quiet),
        }

    def start(self, config: dict, names: dict[str, str], job_dir: Path) -> None:
        def _start() -> None:
            self._wandb = self._importer()
            kwargs = self.init_kwargs(config, names)
            self._run = init_run(self._wandb, Path(job_dir), **kwargs)

        if not self._guard("init", _start):
            self._run = None

    def log_sample(self, record: dict) -> None:
        self._rows.append(sample_row(record))
        self._accept_lengths.extend(record.get("accept_lengths") or [])
        if self.active:
            self._guard("log", lambda: self._run.log(sample_metrics(record)))

    def finish(self, summary: dict[str, Any] | None, failed: bool = False) -> None:
        if not self.active:
            return
        run, self._run = self._run, None
        self._guard("log", lambda: log_final(self._wandb, run, self._rows, self._accept_lengths))
        if summary:
            self._guard("summary", lambda: run.summary.update(summary_metrics(summary)))
        where = where_line(run)
        # Always close the run, also after an error above (exit code 1 marks failed jobs).
        if self._guard("finish", lambda: run.finish(exit_code=1 if failed else 0)) and where:
            log.info(where)
