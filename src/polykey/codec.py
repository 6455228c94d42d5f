"""JSON with bytes: bytes travel as {"$b64": "<base64>"} (agent socket and peer channels).

Documents from the other side are bounded in depth (MAX_DEPTH): `json.loads` accepts nearly a
thousand levels, and anything that walked them by recursion (this module, `json.dumps`,
`repr`) would raise RecursionError, so a deeper document is refused like bad base64.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

MAX_DEPTH = 200  # levels of lists and objects in one document; ours use fewer than 10


class BadEncoding(ValueError):
    """A {"$b64": ...} value that is not valid base64, text that is not valid Unicode, or a
    document nested too deep."""


def to_wire(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return {"$b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, dict):
        return {k: to_wire(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_wire(v) for v in value]
    return value


def from_wire(value: Any) -> Any:
    """Decode {"$b64": ...} values; bad base64, text holding a lone surrogate (JSON's "\\ud800"
    parses, but no UTF-8 can carry it), or lists and objects nested more than MAX_DEPTH
    levels, is BadEncoding."""
    return _from_wire(value, 1)


def _from_wire(value: Any, level: int) -> Any:
    if isinstance(value, dict):
        if level > MAX_DEPTH:  # checked before going deeper: one Python frame per level
            raise BadEncoding("nested too deep")
        if set(value) == {"$b64"} and isinstance(value["$b64"], str):
            try:
                return base64.b64decode(value["$b64"], validate=True)
            except (binascii.Error, ValueError):
                raise BadEncoding("bad base64") from None
        out: dict[Any, Any] = {}
        for k, v in value.items():
            out[_text(k)] = _from_wire(v, level + 1)
        return out
    if isinstance(value, list):
        if level > MAX_DEPTH:
            raise BadEncoding("nested too deep")
        items = []
        for v in value:
            items.append(_from_wire(v, level + 1))
        return items
    if isinstance(value, str):
        return _text(value)
    return value


def _text(value: Any) -> Any:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadEncoding("text that is not valid Unicode") from None
    return value


def within_depth(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether ``value`` (parsed JSON) nests lists and objects at most ``limit`` levels (a
    lone list or object is one level); iterative, so any depth is measured without recursion."""
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if level > limit:
            return False
        todo.extend((c, level + 1) for c in children if isinstance(c, dict | list))
    return True
