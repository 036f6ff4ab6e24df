"""Optional W&B mirror of the training metrics (``logger=wandb``); files stay the truth.

Reuses the ``logger`` config group: a logger whose ``_target_`` is the W&B tracker turns
this on, with its project/mode/entity/group/tags/name. The mode follows the runner's rule
(``$WANDB_MODE``, then an API key means online, else the configured mode, offline by
default). Any W&B failure is a warning, never a failed training run.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from longspec.redact import redact
from longspec.tracking import console_settings, resolve_mode, where_line

log = logging.getLogger(__name__)


class TrainTracker:
    def __init__(self, logger_cfg: Any, config: dict, work_dir: Path, name: str):
        self.run = None
        target = str((logger_cfg or {}).get("_target_", ""))
        if not target.endswith("WandbLogger"):
            return
        try:
            import wandb

            work_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=logger_cfg.get("project") or "longspec",
                entity=logger_cfg.get("entity"),
                group=logger_cfg.get("group"),
                tags=list(logger_cfg.get("tags") or []) + ["train"],
                name=logger_cfg.get("name") or name,
                mode=resolve_mode(logger_cfg.get("mode")),
                dir=str(work_dir),
                config=redact(config),
                job_type="train",
                reinit="finish_previous",
                settings=console_settings(bool(logger_cfg.get("quiet", True))),
            )
        except Exception as err:  # noqa: BLE001 - W&B is a convenience
            log.warning("W&B disabled: %s", err)
            self.run = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.run is None:
            return
        try:
            self.run.log(metrics, step=step)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B log failed: %s", err)

    def finish(self, summary: dict[str, Any] | None = None) -> None:
        if self.run is None:
            return
        try:
            for key, value in (summary or {}).items():
                if isinstance(value, int | float | str):
                    self.run.summary[key] = value
            where = where_line(self.run)
            self.run.finish()
            if where:
                log.info(where)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B finish failed: %s", err)
        self.run = None
