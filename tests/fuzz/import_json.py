"""Polykey's own JSON export read back (interop/formats.py ``read_json``): ``pk import json``.

Input: the file (``\\xfe\\xfe n c`` in it is ``c`` repeated: ``_bytes.expand``). The
documented refusal is :class:`MalformedSource` (a :class:`PolykeyError`). What is read must be
what the CLI goes on with: paths and tags as text, values as bytes; and ``write_json`` of it
must read back the same.
"""

from __future__ import annotations

from polykey.errors import PolykeyError
from polykey.interop.formats import read_json, write_json
from tests.fuzz._bytes import expand


def one_input(data: bytes) -> None:
    try:
        files, tags = read_json(expand(data))
    except PolykeyError:
        return
    for path, value in files:
        assert isinstance(path, str) and isinstance(value, bytes)
    for path, names in tags.items():
        assert isinstance(path, str) and all(isinstance(t, str) for t in names)
    try:  # a vault path is valid Unicode: paths with lone surrogates never get exported
        again = write_json("vault", "0" * 40, files, dict(tags)).encode("utf-8")
    except UnicodeEncodeError:
        return
    assert read_json(again) == (files, tags), "an export does not read back the same"
