"""Environment variables from secrets: names, and values quoted for each shell or file format.

Every format round-trips any value it accepts byte for byte (tests source the unix output in
bash). A value a format cannot carry (a NUL byte anywhere; newlines, '"' or '%' in cmd) is refused
with its variable's name, never silently changed.
"""

from __future__ import annotations

import json
import re

from polykey.errors import InvalidInput
from polykey.interop import dotenv

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FORMATS = ("unix", "dotenv", "json", "powershell", "cmd")


class UnrepresentableValue(InvalidInput):
    """A secret's value cannot be written in this format."""

    hint = "Choose another --format, or use `-- CMD` to pass the variables to a program directly."


def valid_name(name: str) -> bool:
    return NAME.fullmatch(name) is not None


def _text(name: str, value: bytes) -> str:
    if b"\x00" in value:
        raise UnrepresentableValue(f"{name} holds a NUL byte, which no environment can carry")
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise UnrepresentableValue(f"{name} is not UTF-8 text") from None


def render(variables: list[tuple[str, bytes]], fmt: str) -> str:
    """The variables as text in ``fmt``; the caller has checked the names."""
    if fmt == "json":
        return json.dumps({n: _text(n, v) for n, v in variables}, indent=2) + "\n"
    lines = []
    for name, raw in variables:
        value = _text(name, raw)
        if fmt == "unix":
            lines.append(f"export {name}='" + value.replace("'", "'\\''") + "'")
        elif fmt == "dotenv":
            lines.append(f"{name}={dotenv.quote(value)}")
        elif fmt == "powershell":
            lines.append(f"$env:{name} = '" + value.replace("'", "''") + "'")
        elif fmt == "cmd":
            if any(c in value for c in '\r\n"%'):
                raise UnrepresentableValue(f"{name}: cmd cannot carry newlines, '\"' or '%'")
            lines.append(f'set "{name}={value}"')
        else:
            raise InvalidInput(f"unknown format {fmt!r}", hint=f"Use one of {', '.join(FORMATS)}.")
    return "".join(line + "\n" for line in lines)
