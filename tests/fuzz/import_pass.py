"""The pass importer's entry parser and the entry layout (interop/passstore.py ``parse``,
interop/layout.py ``to_files``), and the promise of the pass module: exporting an imported
entry again (``store_files``) writes the file it came from, byte for byte, under its name.

Input: ``u8 flags ‖ entries``, entries separated by ``\\x00\\xff``, each ``name \\x00 data``
(a name is what ``find_entries`` makes of a store's paths: '/'-separated, no empty part, no
part starting with '.'). Flag bit 0 is ``--raw``; flag bit 1 makes every entry's name also a
folder of the store (a name is one anyway when another entry is under it, and the CLI says so
to ``parse``). The first of two entries of one name wins. The documented refusal of
``to_files`` is :class:`ImportFailed` (``parse`` refuses nothing).
"""

from __future__ import annotations

from polykey.interop import passstore
from polykey.interop.errors import ImportFailed
from polykey.interop.layout import Entry, to_files
from tests.fuzz._bytes import split

MAX_ENTRIES = 16


def _entries(flags: int, body: bytes) -> list[tuple[str, bytes, bool, Entry]]:
    """(name, data, is a folder too, entry) as the CLI parses them."""
    found: dict[str, bytes] = {}
    for piece in split(body)[:MAX_ENTRIES]:
        raw_name, _, data = piece.partition(b"\x00")
        name = raw_name.decode("utf-8", "replace")
        parts = name.split("/")
        if any(not p or p.startswith(".") or len(p.encode()) > 251 for p in parts):
            continue  # find_entries never names such a file
        found.setdefault(name, data)
    folders = {"/".join(n.split("/")[:i]) for n in found for i in range(1, n.count("/") + 1)}
    out = []
    for name, data in found.items():
        folder = name in folders or bool(flags & 2)
        entry = passstore.parse(name, data, raw=bool(flags & 1), folder=folder)
        out.append((name, data, folder, entry))
    return out


def one_input(data: bytes) -> None:
    if not data:
        return
    flags = data[0]
    parsed = _entries(flags, data[1:])
    try:
        files, _ = to_files([e for *_, e in parsed], "imported")
    except ImportFailed:
        return
    exported = dict(passstore.store_files(dict(files.items)))
    renamed = {line.split(" -> ")[0] for line in files.renamed}
    for name, _, _, entry in parsed:  # every entry first: a lost one explains the others
        if f"imported/{name}" not in exported and entry.label in renamed:
            raise AssertionError(f"{name!r} was renamed and exports under another name")
        assert f"imported/{name}" in exported, f"{name!r} is not exported (under its name)"
    for name, data_in, _, _ in parsed:
        got = exported[f"imported/{name}"]
        assert got == data_in, f"{name!r} exports to other bytes"
