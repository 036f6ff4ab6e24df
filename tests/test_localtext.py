"""localtext: local files of one kind -> pycode-style continuation prompts (temp dirs, CPU)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from test_data import make_tokenizer

from longspec.data.gettext_mo import mo_strings
from longspec.data.local_files import KINDS, kind_files, package_dirs
from longspec.data.localtext import LocalTextDataset

WORDS = [
    "the",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "a",
    "lazy",
    "dog",
    "while",
    "rivers",
    "flow",
    "to",
    "the",
    "sea",
]


@pytest.fixture(scope="module")
def tok():
    return make_tokenizer()


def prose(i: int, n_words: int = 400) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(n_words)) + f" doc{i}\n"


def write_mo(path: Path, pairs: dict[str, str]) -> None:
    """A little-endian .mo catalog: header entry, then pairs sorted by msgid."""
    items = sorted({"": "Content-Type: text/plain; charset=UTF-8\n", **pairs}.items())
    ids = [k.encode() for k, _ in items]
    strs = [v.encode() for _, v in items]
    n, table = len(items), 28
    data_at = table + 16 * n
    blob, orig, trans = b"", [], []
    for group, out in ((ids, orig), (strs, trans)):
        for s in group:
            out.append((len(s), data_at + len(blob)))
            blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, table, table + 8 * n, 0, 0)
    body = b"".join(struct.pack("<2I", *e) for e in orig + trans)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + body + blob)


def test_unknown_kind_lists_the_kinds():
    with pytest.raises(
        ValueError, match="data.kind must be one of prose, c, shell, other_language"
    ):
        LocalTextDataset("poetry")
    assert list(KINDS) == ["prose", "c", "shell", "other_language"]


def test_prose_sorted_seeded_deduplicated(tmp_path, tok):
    for i in range(6):
        (tmp_path / f"doc{i}.txt").write_text(prose(i))
    (tmp_path / "copy.txt").write_text(prose(2))  # same text as doc2.txt: kept once
    (tmp_path / "short.md").write_text("too short\n")
    meta = tmp_path / "pkg-1.0.dist-info" / "METADATA"
    meta.parent.mkdir()
    meta.write_text("Name: pkg\nVersion: 1.0\n\n" + prose(9))
    ds = LocalTextDataset(
        "prose", prompt_tokens=64, num_samples=3, roots=[str(tmp_path)], min_chars=500, min_files=5
    )
    files = ds.files()
    assert len(files) == 7 and not any("short" in f for f in files)
    assert sum(f.endswith(("copy.txt", "doc2.txt")) for f in files) == 1
    again = LocalTextDataset("prose", roots=[str(tmp_path)], min_chars=500, min_files=5)
    assert again.files() == files  # same seed, same order
    other = LocalTextDataset("prose", roots=[str(tmp_path)], min_chars=500, seed=1, min_files=5)
    assert other.files() != files and sorted(other.files()) == sorted(files)
    samples = ds.load(tok, "chat")
    assert len(samples) == 3 and all(len(s.prompt_ids) == 64 for s in samples)
    assert ds.files_read == files[: len(ds.files_read)] and len(ds.files_read) >= 3
    assert all(s.prompt_ids[0] == tok.bos_token_id for s in samples)
    assert samples[0].id.startswith("localtext/prose/0000/")
    assert "Version: 1.0" not in "".join(s.prompt for s in ds.load(tok, "raw"))
    with pytest.raises(ValueError, match="only 7 files of >= 500 characters.*min_files=8"):
        LocalTextDataset("prose", roots=[str(tmp_path)], min_chars=500, min_files=8).files()
    with pytest.raises(ValueError, match="longer than the whole localtext prose corpus"):
        LocalTextDataset("prose", 100_000, roots=[str(tmp_path)], min_chars=500, min_files=1).load(
            tok, "raw"
        )


def test_shell_and_c_rules(tmp_path, tok):
    body = "".join(f"echo step {i}\n" for i in range(80))
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "tool").write_text("#!/bin/sh\n" + body)
    (tmp_path / "bin" / "tool2").write_text("#!/usr/bin/env bash\n" + body + "# 2\n")
    (tmp_path / "run.sh").write_text(body + "# 3\n")
    (tmp_path / "bin" / "py").write_text("#!/usr/bin/python3\n" + body)
    (tmp_path / "bin" / "dash").write_text("#!/bin/dashboard\n" + body)
    names = {label for _, label in kind_files("shell", [str(tmp_path)])}
    assert names == {"bin/tool", "bin/tool2", "run.sh"}
    ds = LocalTextDataset("shell", 48, 1, roots=[str(tmp_path)], min_chars=100, min_files=3)
    assert ds.load(tok, "raw")[0].prompt.startswith("# file: ")

    decls = "".join(f"int f{i}(int x);\n" for i in range(60))
    (tmp_path / "inc" / "sys").mkdir(parents=True)
    (tmp_path / "inc" / "a.h").write_text(decls)
    (tmp_path / "inc" / "sys" / "b.h").write_text(decls + "/* b */\n")
    (tmp_path / "inc" / "c.hpp").write_text(decls)
    (tmp_path / "inc" / "cpp.h").write_text("namespace ns {\n" + decls + "}\n")
    (tmp_path / "inc" / "tpl.h").write_text("template <typename T>\n" + decls)
    names = [label for _, label in kind_files("c", [str(tmp_path / "inc")])]
    assert names == ["a.h", "sys/b.h"]
    ds = LocalTextDataset("c", 48, 2, roots=[str(tmp_path / "inc")], min_chars=100, min_files=2)
    assert all(s.prompt.startswith("/* file: ") for s in ds.load(tok, "raw"))


def test_other_language_reads_foreign_catalogs(tmp_path, tok):
    pairs = {f"message {i}": f"Nachricht Nummer {i} wurde gesendet" for i in range(40)}
    write_mo(tmp_path / "de" / "LC_MESSAGES" / "app.mo", pairs)
    write_mo(tmp_path / "fr" / "LC_MESSAGES" / "app.mo", {"a": "bonjour " * 200})
    write_mo(tmp_path / "en_GB" / "LC_MESSAGES" / "app.mo", {"a": "colour " * 200})
    write_mo(tmp_path / "de" / "LC_MESSAGES" / "iso_3166.mo", {"Germany": "Deutschland " * 99})
    (tmp_path / "de" / "LC_MESSAGES" / "broken.mo").write_bytes(b"\x00" * 40)
    strings = mo_strings((tmp_path / "de" / "LC_MESSAGES" / "app.mo").read_bytes())
    assert sorted(strings) == sorted(pairs.values())  # the header entry is not text
    with pytest.raises(ValueError, match="magic"):
        mo_strings(b"\x00" * 40)
    ds = LocalTextDataset(
        "other_language", 40, None, roots=[str(tmp_path)], min_chars=500, min_files=2
    )
    assert sorted(Path(f).parent.parent.name for f in ds.files()) == ["de", "fr"]
    samples = ds.load(tok, "raw")
    assert len(samples) == 2 and all(len(s.prompt_ids) == 40 for s in samples)
    assert "Nachricht" in "".join(s.prompt for s in samples)


def test_package_dirs_hold_distributions():
    dirs = package_dirs()
    assert dirs and all(next(d.glob("*.dist-info"), None) for d in dirs)
