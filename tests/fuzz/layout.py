"""The entry layout every importer writes and every exporter reads (interop/layout.py).

Input: ``u8 mode ‖ rest``, the rest being pieces separated by ``\\x00\\xff``.

- mode 0: names. Each piece (UTF-8, surrogates allowed as JSON sources allow them) goes
  through ``encode_name``, which must always give a valid path component, and which
  ``decode_name`` must turn back into the name (when the name is valid Unicode and short
  enough not to be cut).
- mode 1: entries. Pieces ``folder \\x00 name \\x00 field=value \\x00 ...`` (a field starting
  with '@' is an attachment) are laid out by ``to_files``; its refusal is
  :class:`ImportFailed`. Every path it makes must be a valid secret path, no two may collide
  by case, and none may be both a file and a folder.
- mode 2: a vault's files read back as entries (``from_files``, what exports do): pieces
  ``path \\x00 value``; it refuses nothing.
"""

from __future__ import annotations

from polykey.interop.errors import ImportFailed
from polykey.interop.layout import Entry, decode_name, encode_name, from_files, to_files
from polykey.vaults.paths import check_component, fold, split_path
from tests.fuzz._bytes import split

MAX_PIECES = 32
ROUND_TRIP_BYTES = 60


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogatepass") if _is_utf8(raw) else raw.decode("latin-1")


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8", "surrogatepass")
    except UnicodeDecodeError:
        return False
    return True


def _names(pieces: list[bytes]) -> None:
    for piece in pieces:
        name = _text(piece)
        component = encode_name(name)
        check_component(component)
        try:
            short = len(name.encode("utf-8")) <= ROUND_TRIP_BYTES
        except UnicodeEncodeError:  # a lone surrogate: percent-encoded, but not read back
            continue
        if name and short:
            assert decode_name(component) == name, f"{name!r} does not read back"


def _entries(pieces: list[bytes]) -> None:
    entries = []
    for piece in pieces:
        folder, name, *fields = [_text(p) for p in piece.split(b"\x00")] + [""]
        entry = Entry(tuple(p for p in folder.split("/") if p), name)
        for f in fields:
            key, _, value = f.partition("=")
            target = entry.attachments if key.startswith("@") else entry.fields
            target[key.removeprefix("@")] = value.encode("utf-8", "surrogatepass")
        entries.append(entry)
    try:
        files, _ = to_files(entries, "imported")
    except ImportFailed:
        return
    seen: dict[str, str] = {}
    for path, _ in files.items:
        split_path(path)
        assert fold(path) not in seen, f"{path!r} and {seen.get(fold(path))!r} collide"
        seen[fold(path)] = path
    for path in seen:
        parts = path.split("/")
        for i in range(1, len(parts)):
            assert "/".join(parts[:i]) not in seen, f"{path!r} is under a file"


def _read_back(pieces: list[bytes]) -> None:
    files = {}
    for piece in pieces:
        path, _, value = piece.partition(b"\x00")
        files[_text(path)] = value
    from_files(files, {}, "vault")


def one_input(data: bytes) -> None:
    if not data:
        return
    mode, pieces = data[0] % 3, split(data[1:])[:MAX_PIECES]
    (_names, _entries, _read_back)[mode](pieces)
