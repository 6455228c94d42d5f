"""Browser and password-manager CSV exports (interop/formats.py ``read_csv``), then the entry
layout the CLI applies to what it read (interop/layout.py ``to_files``).

Input: ``u8 flags ‖ [columns \\x00] CSV``; flag bit 0 is ``--skip-bad``; with flag bit 1 the
text before the first NUL is the ``--columns`` list (comma-separated). ``\\xfe\\xfe n c`` is
``c`` repeated (``_bytes.expand``). The documented refusals are :class:`MalformedSource` and
:class:`ImportFailed` (a :class:`PolykeyError`).
"""

from __future__ import annotations

from polykey.errors import PolykeyError
from polykey.interop.formats import read_csv
from polykey.interop.layout import to_files
from tests.fuzz._bytes import expand


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, body = data[0], expand(data[1:])
    skip_bad = bool(flags & 1)
    columns = None
    if flags & 2:
        head, _, body = body.partition(b"\x00")
        columns = head.decode("utf-8", "replace").split(",")
    try:
        entries, _ = read_csv(body, columns, skip_bad=skip_bad)
        to_files(entries, "imported", skip_bad=skip_bad)
    except PolykeyError:
        return
