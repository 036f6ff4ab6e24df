"""Acceptance (tau) of GLIDE tree and chain decoding on several kinds of local text.

    python experiments/tau_by_text.py out=tau_by_text.json device=cuda
    python experiments/tau_by_text.py out=/tmp/t.json device=cpu samples=1 new_tokens=16 \
        prompt_tokens=256                                       # a quick CPU check

For SmolLM2 (``model=``) and a draft (the shipped one unless ``drafts=[dir,...]``),
greedy decoding of ``new_tokens`` tokens after ``prompt_tokens``-token continuation
prompts: ``decode=tree`` with ``tree_shape`` and ``decode=seq`` with ``gamma``, on the
pycode eval split (what the draft's training held out) and on each localtext kind (text it
never saw: prose, C headers, shell scripts, other languages). One process,
``longspec.bench.common.run_methods`` per (draft, text). A kind with too few local files is
reported as skipped with its one-line reason. Prints a markdown table and writes JSON to
``out`` (per row tau, tokens/s, the sample ids; per localtext kind the files the prompts
were cut from).

Settings (``key=value``): out, model (default smollm2), device (auto|cpu|cuda), samples,
prompt_tokens, new_tokens, kinds, drafts, tree_shape, gamma, label, min_files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from longspec.bench.common import run_methods
from longspec.bench.e2e import CONF, decode_config
from longspec.config import register
from longspec.loading import load_tokenizer, resolve_source
from longspec.models.draft_vocab import RANKING_FILE

DEFAULTS = {
    "out": "???",
    "model": "smollm2",
    "device": "auto",
    "samples": 4,
    "prompt_tokens": 2048,
    "new_tokens": 128,
    "kinds": ["pycode", "prose", "c", "shell", "other_language"],
    "drafts": None,  # null = the model's shipped draft; else a list of draft directories
    "tree_shape": [4, 16, 16, 16, 16],
    "gamma": 4,
    "label": "",
    "min_files": 8,
}


def settings(argv: list[str]) -> DictConfig:
    """DEFAULTS overridden by ``key=value`` arguments (unknown keys are an error)."""
    base = OmegaConf.create(DEFAULTS)
    OmegaConf.set_struct(base, True)
    return OmegaConf.merge(base, OmegaConf.from_dotlist(argv))


def data_overrides(kind: str, s: DictConfig) -> list[str]:
    common = [f"data.prompt_tokens={s.prompt_tokens}", f"data.num_samples={s.samples}"]
    if kind == "pycode":
        return ["data=pycode", "data.split=eval", *common]
    return ["data=localtext", f"data.kind={kind}", f"data.min_files={s.min_files}", *common]


def bench_cfg(kind: str, draft: str | None, s: DictConfig) -> DictConfig:
    overrides = [
        f"model={s.model}",
        f"device={s.device}",
        f"generation.max_new_tokens={s.new_tokens}",
        "generation.temperature=0",
        *data_overrides(kind, s),
    ]
    if draft is not None:
        path = Path(draft).expanduser().resolve()
        overrides += [f"model.draft.path={path}", "model.draft.package=null"]
        if not (path / RANKING_FILE).is_file():  # a training checkpoint: score every token
            overrides.append("model.draft.vocab=null")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("bench", overrides)


def methods(cfg: DictConfig, s: DictConfig) -> list[tuple[str, DictConfig]]:
    tree, seq = decode_config("tree", cfg), decode_config("seq", cfg)
    tree.tree_shape = list(s.tree_shape)
    seq.gamma = int(s.gamma)
    return [(f"tree {list(s.tree_shape)}", tree), (f"seq gamma {s.gamma}", seq)]


def prompts_info(cfg: DictConfig, tokenizer) -> dict:
    """Sample ids and (localtext) the files the prompts are cut from."""
    dataset = instantiate(cfg.data)
    ids = [sample.id for sample in dataset.load(tokenizer, "raw")]
    return {"sample_ids": ids, "files": getattr(dataset, "files_read", None)}


def measure(kind: str, draft: str | None, s: DictConfig, tokenizer) -> dict:
    """Rows of one (text kind, draft), or the reason the kind was skipped."""
    cfg = bench_cfg(kind, draft, s)
    try:
        info = prompts_info(cfg, tokenizer)
    except ValueError as err:  # e.g. too few files of this kind on this machine
        return {"kind": kind, "draft": draft or "shipped", "skipped": str(err)}
    rows, env = run_methods(cfg, methods(cfg, s))
    for row in rows:
        row.pop("outputs")
    return {"kind": kind, "draft": draft or "shipped", "rows": rows, "env": env, **info}


def table(results: list[dict]) -> str:
    lines = [
        "| text | draft | prompts | method | tau | tokens/s | new tokens |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if "skipped" in r:
            lines.append(f"| {r['kind']} | {r['draft']} | - | skipped: {r['skipped']} | | | |")
            continue
        for row in r["rows"]:
            lines.append(
                f"| {r['kind']} | {'/'.join(Path(r['draft']).parts[-2:])} | "
                f"{len(r['sample_ids'])} | "
                f"{row['method']} | {row['tau']:.2f} | {row['tokens_per_s']:.1f} | "
                f"{row['new_tokens']} |"
            )
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    register()
    s = settings(argv)
    if s.out == "???":
        raise SystemExit("usage: python experiments/tau_by_text.py out=FILE.json [key=value ...]")
    tokenizer = load_tokenizer(resolve_source(bench_cfg("pycode", None, s).model.target))
    drafts = [None] if s.drafts is None else [str(d) for d in s.drafts]
    results = [measure(kind, d, s, tokenizer) for d in drafts for kind in s.kinds]
    text = table(results)
    print(text)
    out = Path(s.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {"label": s.label, "settings": OmegaConf.to_container(s), "table": text}
    out.write_text(json.dumps(payload | {"results": results}, indent=2, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
