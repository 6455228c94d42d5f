""".env files (interop/formats.py ``read_dotenv``).

Input: ``u8 flags ‖ text``; flag bit 0 is ``--skip-bad``; ``\\xfe\\xfe n c`` is ``c``
repeated (``_bytes.expand``). The documented refusals are :class:`MalformedSource` and
:class:`ImportFailed` (a :class:`PolykeyError`). Every variable read must have a name the format
allows (it becomes a secret's path).
"""

from __future__ import annotations

from polykey.errors import PolykeyError
from polykey.interop.formats import _NAME, read_dotenv
from tests.fuzz._bytes import expand


def one_input(data: bytes) -> None:
    if not data:
        return
    try:
        variables, _ = read_dotenv(expand(data[1:]), skip_bad=bool(data[0] & 1))
    except PolykeyError:
        return
    for name, value in variables:
        assert _NAME.fullmatch(name), f"a variable has the name {name!r}"
        assert isinstance(value, bytes)
