"""List the jobs a sweep would launch, without loading any model.

``python -m longspec.dryrun +experiment=paper_longbench [more overrides] [--compose]``

Composes the config with the non-sweep overrides, then expands ``hydra.sweeper.params``
plus any sweep overrides (``decode=vanilla,tree``) the way Hydra's basic sweeper does
(cartesian product, in order). ``--compose`` also composes every job's config, which
catches a bad option name or key before anything is launched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig

from longspec.config import register

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
CONFIG_NAME = "config"


def split_sweeps(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """(plain overrides, sweep overrides) of a command line."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    plain = [o.input_line for o in parsed if not o.is_sweep_override()]
    sweeps = [o.input_line for o in parsed if o.is_sweep_override()]
    return plain, sweeps


def compose_config(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """The composed config (hydra node included) for plain overrides."""
    register()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose(CONFIG_NAME, overrides=list(overrides), return_hydra_config=True)


def sweep_params(cfg: DictConfig) -> list[str]:
    """``hydra.sweeper.params`` as ``key=values`` overrides."""
    params = cfg.hydra.sweeper.get("params") or {}
    return [f"{key}={value}" for key, value in params.items()]


def expand(overrides: Sequence[str]) -> list[list[str]]:
    """Every job's override list: the cartesian product of the sweep overrides."""
    parsed = OverridesParser.create().parse_overrides(list(overrides))
    batches = BasicSweeper.split_arguments(parsed, None)
    return [job for batch in batches for job in batch]


def list_jobs(overrides: Sequence[str], conf_dir: Path = CONF_DIR) -> list[list[str]]:
    """The override lists of the jobs ``python run.py -m <overrides>`` would launch."""
    plain, sweeps = split_sweeps(overrides)
    cfg = compose_config(plain, conf_dir)
    # Same order as Hydra's basic sweeper: config params first, then the command line.
    return expand(sweep_params(cfg) + plain + sweeps)


def compose_jobs(jobs: Sequence[Sequence[str]], conf_dir: Path = CONF_DIR) -> list[DictConfig]:
    """Compose every job's config (no instantiation): raises on the first bad job."""
    register()
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return [compose(CONFIG_NAME, overrides=list(job)) for job in jobs]


def job_line(index: int, job: Sequence[str], hidden: set[str]) -> str:
    return f"{index:4d}  " + " ".join(o for o in job if o not in hidden)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m longspec.dryrun",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. +experiment=...")
    parser.add_argument("--compose", action="store_true", help="compose every job's config")
    args = parser.parse_args(argv)
    jobs = list_jobs(args.overrides)
    common = set.intersection(*(set(j) for j in jobs)) if len(jobs) > 1 else set()
    if common:
        print("every job: " + " ".join(o for o in jobs[0] if o in common))
    for index, job in enumerate(jobs):
        print(job_line(index, job, common))
    if args.compose:
        compose_jobs(jobs)
        print(f"all {len(jobs)} job configs compose")
    print(f"{len(jobs)} jobs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
