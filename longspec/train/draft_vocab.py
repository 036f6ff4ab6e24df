"""Write the token ranking a reduced draft vocabulary uses (``decode.draft_vocab``).

    python -m longspec.train.draft_vocab model=smollm2 +out=longspec/assets/glide-smollm2

counts every token of the pycode *train* split (the draft's training text, nothing from
the eval split) with the target's tokenizer and writes ``token_counts.json`` into ``out``.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from longspec.models.draft_vocab import count_tokens, save_ranking


def write_ranking(tokenizer, vocab_size: int, out: Path, root: str | None = None) -> Path:
    """Count the train split's tokens and save the ranking into ``out``."""
    from longspec.train.data import tokenize_split

    files, pieces = tokenize_split(tokenizer, "train", root)
    source = f"pycode train split ({len(files)} files)"
    return save_ranking(out, count_tokens(pieces, vocab_size), source)


def _main(cfg: DictConfig) -> int:
    from longspec.loading import load_target

    if "out" not in cfg:
        raise ValueError("out: where to write token_counts.json (pass +out=DIR)")
    hf, tokenizer = load_target(
        cfg.model.target, dtype="float32", device="cpu", trust_remote_code=cfg.trust_remote_code
    )
    path = write_ranking(tokenizer, hf.config.vocab_size, Path(cfg.out), cfg.train.data_root)
    print(f"wrote {path}")
    return 0


@hydra.main(version_base="1.3", config_path="../../conf", config_name="train_config")
def main(cfg: DictConfig) -> int:
    from longspec.errors import exit_on_user_error

    return exit_on_user_error(_main, cfg)


if __name__ == "__main__":
    main()
