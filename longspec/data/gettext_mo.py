"""The translated strings of a compiled gettext catalog (``.mo``), for ``localtext``.

Format (GNU gettext manual, "The Format of GNU MO Files"): a magic number that also gives
the byte order, a revision, the number of strings N, then the offsets of two tables of N
(length, offset) pairs: original strings and their translations. Entry 0 with an empty
original is the catalog header (metadata), not text. Plural translations are NUL-separated.
"""

from __future__ import annotations

import struct

MAGIC = 0x950412DE


def _byte_order(data: bytes) -> str:
    for order in ("<", ">"):
        if struct.unpack(f"{order}I", data[:4])[0] == MAGIC:
            return order
    raise ValueError("not a gettext .mo file (bad magic number)")


def mo_strings(data: bytes) -> list[str]:
    """Translations of every non-header entry, in catalog order; ValueError if malformed."""
    if len(data) < 20:
        raise ValueError("not a gettext .mo file (too short)")
    order = _byte_order(data)
    n, orig_at, trans_at = struct.unpack(f"{order}3I", data[8:20])
    out = []
    try:
        for i in range(n):
            orig_len, _ = struct.unpack_from(f"{order}2I", data, orig_at + 8 * i)
            length, offset = struct.unpack_from(f"{order}2I", data, trans_at + 8 * i)
            if orig_len == 0 or offset + length > len(data):
                continue  # the metadata header, or a broken entry
            text = data[offset : offset + length].decode("utf-8", errors="replace")
            out.append(text.replace("\x00", "\n"))
    except struct.error as err:
        raise ValueError(f"truncated gettext .mo file ({err})") from None
    return out
