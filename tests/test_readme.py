"""Every command the README shows composes: its config groups, options and overrides exist
(Hydra's compose, no job run)."""

import re
import shlex
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from longspec.config import register

ROOT = Path(__file__).parents[1]
ENTRIES = {  # command prefix -> the config it composes
    "python run.py": "config",
    "python train.py": "train_config",
    "python -m longspec.bench.e2e": "bench",
    "python -m longspec.bench.scale": "bench_scale",
}


def readme_commands() -> list[tuple[str, list[str]]]:
    """(config name, overrides) of each command line in the README's code blocks,
    backslash continuations joined, comments and `bash install.sh &&` dropped."""
    blocks = re.findall(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    found = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].removeprefix("bash install.sh && ").strip()
            for prefix, config in ENTRIES.items():
                if line == prefix or line.startswith(prefix + " "):
                    found.append((config, shlex.split(line[len(prefix) :])))
    return found


COMMANDS = readme_commands()


def test_the_readme_shows_commands_of_every_entry_point():
    assert {config for config, _ in COMMANDS} == set(ENTRIES.values())


@pytest.mark.parametrize(("config", "overrides"), COMMANDS, ids=[" ".join(o) for _, o in COMMANDS])
def test_readme_command_composes(config, overrides):
    register()
    sweep = "-m" in overrides or "--multirun" in overrides
    overrides = [o for o in overrides if o not in ("-m", "--multirun")]
    if sweep:  # a sweep composes as its first job
        overrides = [first_job(o) for o in OverridesParser.create().parse_overrides(overrides)]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        compose(config_name=config, overrides=overrides)


def first_job(override) -> str:
    """A parsed override as its first sweep value (unchanged if it sweeps nothing)."""
    if not override.is_sweep_override():
        return override.input_line
    return f"{override.get_key_element()}={next(override.sweep_string_iterator())}"
