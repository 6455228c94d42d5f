""".env files: interop/dotenv.py ``parse``, through interop/formats.py ``read_dotenv`` (what
`pk import dotenv` calls; `pk run --env-file` calls ``parse`` too), and the writer ``quote``.

Input: ``u8 flags ‖ text``; flag bit 0 is ``--skip-bad``; ``\\xfe\\xfe n c`` is ``c``
repeated (``_bytes.expand``). The documented refusals are :class:`MalformedSource` and
:class:`ImportFailed` (a :class:`PolykeyError`). Every variable read must have a name the format
allows (it becomes a secret's path), no bad line may quote the file, and every value must read
back unchanged from what the writer makes of it.
"""

from __future__ import annotations

from polykey.errors import PolykeyError
from polykey.interop.dotenv import NAME, parse, quote
from polykey.interop.formats import read_dotenv
from tests.fuzz._bytes import expand


def one_input(data: bytes) -> None:
    if not data:
        return
    text = expand(data[1:])
    try:
        variables, skipped = read_dotenv(text, skip_bad=bool(data[0] & 1))
    except PolykeyError:
        return
    for name, value in variables:
        assert NAME.fullmatch(name), f"a variable has the name {name!r}"
        assert isinstance(value, bytes)
    parsed = parse(text)  # the reader `pk run --env-file` uses: the same variables
    assert [(n, v.encode()) for n, v in parsed.variables.items()] == variables
    assert skipped == [(f"line {b.line}", b.why) for b in parsed.bad]
    for name, text_value in parsed.variables.items():
        again = parse(f"{name}={quote(text_value)}\n".encode())
        assert again == ({name: text_value}, []), name
