"""Entry point: ``python run.py model=smollm2 decode=tree data=pycode``."""

import hydra
from omegaconf import DictConfig

from longspec.config import register
from longspec.errors import exit_on_user_error

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> int:
    from longspec.runner import run

    return exit_on_user_error(run, cfg)


if __name__ == "__main__":
    main()
