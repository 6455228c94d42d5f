"""Bitwarden's unencrypted JSON export (interop/formats.py ``read_bitwarden``), then the entry
layout the CLI applies to what it read (interop/layout.py ``to_files``).

Input: ``u8 flags ‖ JSON``; flag bit 0 is ``--skip-bad``; ``\\xfe\\xfe n c`` in the JSON is ``c``
repeated (``_bytes.expand``). The documented refusals are
:class:`MalformedSource` and :class:`ImportFailed` (a :class:`PolykeyError`).
"""

from __future__ import annotations

from polykey.errors import PolykeyError
from polykey.interop.formats import read_bitwarden
from polykey.interop.layout import to_files
from tests.fuzz._bytes import expand


def one_input(data: bytes) -> None:
    if not data:
        return
    skip_bad = bool(data[0] & 1)
    try:
        entries, _ = read_bitwarden(expand(data[1:]), skip_bad=skip_bad)
        to_files(entries, "imported", skip_bad=skip_bad)
    except PolykeyError:
        return
