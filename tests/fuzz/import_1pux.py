"""1Password's .1pux export (interop/onepassword.py ``read_1pux``), then the entry layout the
CLI applies to what it read (interop/layout.py ``to_files``).

Input: ``u8 flags ‖ rest``; flag bit 0 is ``--skip-bad``. With flag bit 1 the rest is the
archive itself (a fuzzed zip). Otherwise the archive is made here, so that the fuzzer works on
the JSON rather than on zip checksums: the rest is pieces separated by ``\\x00\\xff``; the
first is ``export.data``, each other one a member ``name \\x00 content`` (stored, or deflated
when the name starts with 'z'). The documented refusals are :class:`MalformedSource` and
:class:`ImportFailed` (a :class:`PolykeyError`).
"""

from __future__ import annotations

import io
import warnings
import zipfile

from polykey.errors import PolykeyError
from polykey.interop.layout import to_files
from polykey.interop.onepassword import read_1pux
from tests.fuzz._bytes import expand, split

MAX_MEMBERS = 8


def archive(export_data: bytes, members: list[tuple[str, bytes]]) -> bytes:
    out = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(out, "w") as z:
        warnings.simplefilter("ignore")  # names given twice: the reader must cope
        z.writestr("export.attributes", b'{"version":3}')
        z.writestr("export.data", export_data)
        for name, content in members:
            kind = zipfile.ZIP_DEFLATED if name.startswith("z") else zipfile.ZIP_STORED
            z.writestr(zipfile.ZipInfo(name), content, compress_type=kind)
    return out.getvalue()


def one_input(data: bytes) -> None:
    if not data:
        return
    flags, rest = data[0], data[1:]
    if flags & 2:
        blob = rest
    else:
        first, *others = split(rest)
        members = []
        for piece in others[:MAX_MEMBERS]:
            name, _, content = piece.partition(b"\x00")
            members.append((name.decode("utf-8", "replace") or "files/x", content))
        blob = archive(expand(first), members)
    skip_bad = bool(flags & 1)
    try:
        entries, _ = read_1pux(blob, skip_bad=skip_bad)
        to_files(entries, "imported", skip_bad=skip_bad)
    except PolykeyError:
        return
