"""Where each ``localtext`` kind finds its files, and how a file becomes text.

Default places (what a Debian/Ubuntu machine with Python has; ``data.roots`` replaces them,
searched with the kind's ``patterns``):

* ``prose`` (English): ``/usr/share/common-licenses/*`` (base-files, on every
  Debian/Ubuntu), the interpreter's ``LICENSE.txt``, and the long description (the body
  of ``*.dist-info/METADATA``, a Markdown/reST README) of every distribution installed on
  ``sys.path``. Left out on purpose: ``/usr/share/doc/*/copyright`` (DEP-5 field lists
  around yet more copies of the same licenses), man pages (gzipped roff markup) and loose
  ``*.md``/``*.rst`` files (dominated by whatever happens to be installed).
* ``c``: C headers ``*.h`` under ``/usr/include``, ``/usr/local/include`` and the Python
  include directory; headers with C++ constructs (``namespace``/``template``/``class`` at
  a line start) are left out.
* ``shell``: ``*.sh`` under ``/etc``, ``/usr/lib``, ``/usr/libexec``, ``/usr/share``, and
  scripts whose first line is a sh/bash/dash/ksh/zsh shebang in the ``bin`` directories and
  ``/etc/init.d``.
* ``other_language``: the translated strings of compiled gettext catalogs
  (``*/LC_MESSAGES/*.mo``) under ``/usr/share/locale``, ``/usr/local/share/locale`` and the
  package directories, leaving out English locales and the iso-codes catalogs (lists of
  country and language names). Minimised Ubuntu images (most GPU containers) drop these
  catalogs: the kind then stops with a one-line error.
"""

from __future__ import annotations

import fnmatch
import functools
import os
import re
import sys
import sysconfig
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from longspec.data.gettext_mo import mo_strings

SHEBANG = re.compile(rb"^#!\s*\S*/(?:env\s+)?(?:ba|da|k|z)?sh(?:\s|$)")
CPLUSPLUS = re.compile(r"^\s*(?:namespace\s+\w+\s*\{|template\s*<|class\s+\w+\s*[:{])", re.M)
BIN_DIRS = ("/usr/bin", "/usr/sbin", "/usr/local/bin", "/bin", "/sbin", "/etc/init.d")
SH_TREES = ("/etc", "/usr/lib", "/usr/libexec", "/usr/share", "/usr/local/lib")
LOCALE_DIRS = ("/usr/share/locale", "/usr/local/share/locale")
MO_PATTERN = "**/LC_MESSAGES/*.mo"

Place = tuple[Path, str]  # (root, pattern): "**/<name glob>" = anywhere below root


def package_dirs() -> list[Path]:
    """Directories on sys.path that hold installed distributions (``*.dist-info``)."""
    found = []
    for entry in sys.path:
        path = Path(entry or ".").resolve()
        if path.is_dir() and path not in found and next(path.glob("*.dist-info"), None):
            found.append(path)
    return found


def find(root: Path, pattern: str) -> list[Path]:
    """Regular files under ``root`` matching ``pattern`` (``**/`` prefix: at any depth)."""
    if not root.is_dir():
        return []
    if not pattern.startswith("**/"):
        return [p for p in root.glob(pattern) if p.is_file()]
    rest = pattern[3:]
    hits = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in filenames:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if fnmatch.fnmatch(rel, rest) or fnmatch.fnmatch(rel, f"*/{rest}"):
                hits.append(path)
    return [p for p in hits if p.is_file()]


def is_shell_script(path: Path) -> bool:
    """A ``.sh`` file, or a file whose first line is a Bourne-family shebang."""
    if path.suffix == ".sh":
        return True
    try:
        with path.open("rb") as f:
            return bool(SHEBANG.match(f.read(128)))
    except OSError:
        return False


def is_c_header(path: Path) -> bool:
    """A header without C++ constructs (namespace/template/class at a line start)."""
    try:
        return not CPLUSPLUS.search(read_plain(path))
    except OSError:
        return False


def is_foreign_catalog(path: Path) -> bool:
    """A ``.mo`` catalog of a non-English locale that is not an iso-codes name list."""
    parts = path.parts
    if len(parts) < 3 or parts[-2] != "LC_MESSAGES" or path.name.startswith("iso_"):
        return False
    lang = parts[-3]
    return not (lang == "en" or lang.startswith(("en_", "en@")))


def read_plain(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def read_metadata(path: Path) -> str:
    """The long description of a METADATA file: the body after the header block."""
    text = read_plain(path)
    return text.partition("\n\n")[2] if path.name == "METADATA" else text


def read_catalog(path: Path) -> str:
    """A catalog's translated strings, one per line ('' for a malformed file)."""
    try:
        return "\n".join(mo_strings(path.read_bytes()))
    except (OSError, ValueError):
        return ""


def _prose_places() -> list[Place]:
    places: list[Place] = [(Path("/usr/share/common-licenses"), "*")]
    places.append((Path(sysconfig.get_paths()["stdlib"]), "LICENSE.txt"))
    return places + [(d, "*.dist-info/METADATA") for d in package_dirs()]


def _c_places() -> list[Place]:
    dirs = ["/usr/include", "/usr/local/include", sysconfig.get_paths()["include"]]
    return [(Path(d), "**/*.h") for d in dict.fromkeys(dirs)]


def _shell_places() -> list[Place]:
    return [(Path(d), "*") for d in BIN_DIRS] + [(Path(d), "**/*.sh") for d in SH_TREES]


def _catalog_places() -> list[Place]:
    dirs = [Path(d) for d in LOCALE_DIRS] + package_dirs()
    return [(d, MO_PATTERN) for d in dirs]


@dataclass(frozen=True)
class Kind:
    """One kind of local text: where to look, which files count, how to read them."""

    places: Callable[[], list[Place]]  # default (root, pattern) pairs
    patterns: tuple[str, ...]  # searched under each of data.roots instead
    keep: Callable[[Path], bool]
    read: Callable[[Path], str]
    header: str  # put before each file's text, formatted with {label}; "" for prose


KINDS: dict[str, Kind] = {
    "prose": Kind(
        _prose_places,
        ("**/*.txt", "**/*.md", "**/*.rst", "**/METADATA"),
        lambda p: True,
        read_metadata,
        "",
    ),
    "c": Kind(_c_places, ("**/*.h",), is_c_header, read_plain, "/* file: {label} */\n"),
    "shell": Kind(_shell_places, ("**/*",), is_shell_script, read_plain, "# file: {label}\n"),
    "other_language": Kind(_catalog_places, (MO_PATTERN,), is_foreign_catalog, read_catalog, ""),
}


def check_kind(kind: str) -> Kind:
    """The kind's spec; ValueError listing the allowed kinds otherwise."""
    if kind not in KINDS:
        raise ValueError(f"data.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    return KINDS[kind]


def kind_files(kind: str, roots: list[str] | None = None) -> list[tuple[Path, str]]:
    """(path, label) of the kind's candidate files, sorted by path, each real file once.

    ``label`` is the path relative to the root it was found under. Remembered per process
    (kind, roots): the file system is walked once however many datasets ask.
    """
    check_kind(kind)
    return list(_kind_files(kind, None if roots is None else tuple(str(r) for r in roots)))


@functools.lru_cache(maxsize=32)
def _kind_files(kind: str, roots: tuple[str, ...] | None) -> tuple[tuple[Path, str], ...]:
    spec = KINDS[kind]
    if roots is None:
        places = spec.places()
    else:
        places = [(Path(r).expanduser(), pat) for r in roots for pat in spec.patterns]
    seen: dict[Path, tuple[Path, str]] = {}
    for root, pattern in places:
        for path in find(root, pattern):
            real = path.resolve()
            if real not in seen and spec.keep(path):
                seen[real] = (path, path.relative_to(root).as_posix())
    return tuple(sorted(seen.values(), key=lambda item: str(item[0])))
