"""JSON with bytes: bytes travel as {"$b64": "<base64>"} (agent socket and peer channels)."""

from __future__ import annotations

import base64
import binascii
from typing import Any


class BadEncoding(ValueError):
    """A {"$b64": ...} value that is not valid base64."""


def to_wire(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


def from_wire(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b64"} and isinstance(value["$b64"], str):
            try:
                return base64.b64decode(value["$b64"], validate=True)
            except (binascii.Error, ValueError):
                raise BadEncoding("bad base64") from None
        return {k: from_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_wire(v) for v in value]
    return value
