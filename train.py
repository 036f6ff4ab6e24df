"""Train a GLIDE draft for a target: ``python train.py model=smollm2 train=default``.

The target is frozen; only the one GLIDE layer learns (LongSpec recipe, REFERENCE.md
section 5). See conf/train_config.yaml and conf/train/*.yaml for the settings and
longspec/train/ for the pieces. ``resume=true`` continues ``train.work_dir``'s checkpoint.
"""

import hydra
from omegaconf import DictConfig

from longspec.errors import exit_on_user_error


@hydra.main(version_base="1.3", config_path="conf", config_name="train_config")
def main(cfg: DictConfig) -> int:
    from longspec.train.loop import train

    return exit_on_user_error(train, cfg)


if __name__ == "__main__":
    main()
