"""Our code around pykeepass (interop/keepass.py ``read_entries``): the walk over a decrypted
database's XML, then the entry layout the CLI applies (interop/layout.py ``to_files``).

pykeepass itself (KDBX framing, ciphers, KDFs) is a third-party parser and is not fuzzed: an
input here is what it hands over once a file is open, its XML tree and its binaries. Input:
pieces separated by ``\\x00\\xff``: the root ``Group`` element's XML, then the binaries. A
piece that is not XML (or not a ``Group``) ends the input. The documented refusal is
:class:`ImportFailed` (a :class:`PolykeyError`).
"""

from __future__ import annotations

from typing import Any

from lxml import etree  # type: ignore[import-untyped]  # pykeepass brings lxml; no stubs

from polykey.errors import PolykeyError
from polykey.interop.keepass import read_entries
from polykey.interop.layout import to_files
from tests.fuzz._bytes import split

_PARSER = etree.XMLParser(resolve_entities=False, no_network=True, huge_tree=False)


class _Group:
    def __init__(self, element: Any) -> None:
        self._element = element


class _Database:
    """What ``read_entries`` uses of a ``PyKeePass``."""

    def __init__(self, root: Any, binaries: list[bytes]) -> None:
        self.root_group = _Group(root)
        self.binaries = binaries
        bin_group = root.find(".//Group[Name='Recycle Bin']")
        self.recyclebin_group = _Group(bin_group) if bin_group is not None else None


def one_input(data: bytes) -> None:
    xml, *binaries = split(data)
    try:
        root = etree.fromstring(xml, _PARSER)
    except etree.XMLSyntaxError:
        return
    if root is None or root.tag != "Group":
        return
    try:
        entries, _ = read_entries(_Database(root, binaries))
        to_files(entries, "imported")
    except PolykeyError:
        return
