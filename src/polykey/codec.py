"""Messages: the JSON-RPC 2.0 bodies of polykey.frames, on the agent's socket and on peer channels
(docs/spec/agent.md "Frames", docs/spec/peer-protocol.md "Messages"; test vectors in
docs/spec/frame-vectors.json).

A body is UTF-8 JSON text holding one object; bytes travel as ``{"$b64": "<base64>"}``. What the
other side sends is refused (:class:`BadMessage`, the connection closes) when it is not UTF-8,
not JSON (``NaN`` and ``Infinity`` are not), not an object, nested more than MAX_DEPTH lists and
objects deep, holds text no UTF-8 can carry (JSON's ``"\\ud800"`` parses), bad base64, or is not
a JSON-RPC 2.0 request or reply. Depth is bounded because ``json.loads`` accepts nearly a
thousand levels, and anything that walked them by recursion (this module, ``json.dumps``,
``repr``) would raise RecursionError.

Messages are written compactly, ASCII only, keys in the order given (``encode``): the CLI's hot
path writes the same bytes without a JSON module (``frames.request``).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from polykey.frames import FrameError

MAX_DEPTH = 200  # levels of lists and objects in one document; ours use fewer than 10


class BadMessage(FrameError):
    """A body that is not a valid message: not UTF-8 JSON holding one object, nested too deep,
    text that is not valid Unicode, a {"$b64": ...} value that is not valid base64, or not a
    JSON-RPC 2.0 request or reply."""


# --- JSON with bytes --------------------------------------------------------------------------


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
    levels, is BadMessage."""
    return _from_wire(value, 1)


def _from_wire(value: Any, level: int) -> Any:
    if isinstance(value, dict):
        if level > MAX_DEPTH:  # checked before going deeper: one Python frame per level
            raise BadMessage("nested too deep")
        if _stands_for_bytes(value):
            try:
                return base64.b64decode(value["$b64"], validate=True)
            except (binascii.Error, ValueError):
                raise BadMessage("bad base64") from None
        out: dict[Any, Any] = {}
        for k, v in value.items():
            out[_text(k)] = _from_wire(v, level + 1)
        return out
    if isinstance(value, list):
        if level > MAX_DEPTH:
            raise BadMessage("nested too deep")
        items = []
        for v in value:
            items.append(_from_wire(v, level + 1))
        return items
    if isinstance(value, str):
        return _text(value)
    return value


def _stands_for_bytes(value: dict[Any, Any]) -> bool:
    return len(value) == 1 and isinstance(value.get("$b64"), str)


def _text(value: Any) -> Any:
    if isinstance(value, str) and not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadMessage("text that is not valid Unicode") from None
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


def _all_text_valid(value: Any) -> bool:
    """Whether every key and text in ``value`` (parsed JSON, within depth) is valid Unicode."""
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, dict):
            todo.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
        elif isinstance(item, str) and not item.isascii():
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
    return True


# --- bodies -----------------------------------------------------------------------------------


def encode(message: dict[str, Any]) -> bytes:
    """A message's body: bytes as {"$b64": ...}, compact, ASCII only, keys in their order."""
    return json.dumps(to_wire(message), separators=(",", ":")).encode("ascii")


def text_of(body: bytes | bytearray) -> str:
    """A body's text: BadMessage if it is not UTF-8."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        raise BadMessage("not UTF-8") from None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode(body: bytes | bytearray | str) -> dict[str, Any]:
    """A body's JSON object, bytes still {"$b64": ...} (``from_wire`` decodes them): BadMessage
    if it is not UTF-8 JSON holding one object, nests more than MAX_DEPTH levels, or holds text
    no UTF-8 can carry. Text given is taken as decoded from UTF-8 (``text_of``), so that a
    large body's bytes can be dropped before it is parsed."""
    text = body if isinstance(body, str) else text_of(body)
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except RecursionError:  # deeper than json.loads itself goes
        raise BadMessage("nested too deep") from None
    except ValueError:
        raise BadMessage("not JSON") from None
    if not isinstance(doc, dict):
        raise BadMessage("not a JSON object")
    if not within_depth(doc):  # anything walking it by recursion would fail
        raise BadMessage("nested too deep")
    # a surrogate can only come from an escape (the text is UTF-8): look only then
    if ("\\ud" in text or "\\uD" in text) and not _all_text_valid(doc):
        raise BadMessage("text that is not valid Unicode")
    return doc


# --- JSON-RPC 2.0 -----------------------------------------------------------------------------


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_id(value: Any) -> bool:
    """A request id: a whole number or text (JSON-RPC 2.0 allows null too: a notification)."""
    return isinstance(value, str) or _whole(value)


def check_request(message: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(id, method, params) of a JSON-RPC 2.0 request (id None: none given; params {} when
    absent; bytes in params still {"$b64": ...}); BadMessage for anything else."""
    if message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        raise BadMessage("not a JSON-RPC 2.0 request")
    params = message.get("params", {})
    if not isinstance(params, dict) or _stands_for_bytes(params):
        raise BadMessage("params must be an object")
    request_id = message.get("id")
    if request_id is not None and not _is_id(request_id):
        raise BadMessage("bad id")
    return request_id, message["method"], params


def check_reply(
    message: dict[str, Any], request_id: int | str
) -> tuple[Any, dict[str, Any] | None]:
    """(result, None) of a JSON-RPC 2.0 reply to request ``request_id`` that carries a result,
    (None, error) of one that carries an error (an object with a whole-number ``code`` and a
    text ``message``); BadMessage for anything else. Bytes in the result are still
    {"$b64": ...}."""
    if message.get("jsonrpc") != "2.0" or ("result" in message) == ("error" in message):
        raise BadMessage("not a JSON-RPC 2.0 reply")
    got = message.get("id")
    if type(got) is not type(request_id) or got != request_id:
        raise BadMessage("a reply to another request")
    if "result" in message:
        return message["result"], None
    error = message["error"]
    if not (
        isinstance(error, dict)
        and _whole(error.get("code"))
        and isinstance(error.get("message"), str)
    ):
        raise BadMessage("a malformed error")
    return None, error


# --- raw pages --------------------------------------------------------------------------------
#
# A reply that carries many objects (a page of a paged ``vaults.fetch``) may travel as a raw page
# instead of JSON with base64, to a request that asked for one with ``"raw": true``
# (docs/spec/peer-protocol.md, "Raw pages"): the reply without its objects as a JSON head, then
# the objects' bytes, each after its length.

PAGE_MARK = 0x00  # a raw page's first byte (a JSON body starts with "{")
PAGE_VERSION = 1
_U32 = 4


class Page(dict[str, Any]):
    """A result to send as a raw page: ``objects`` (a list of bytes) and, with ``part_of``,
    ``part`` (bytes) travel after the head as bytes; every other key in the head as JSON."""


def encode_page(request_id: int | str, result: dict[str, Any]) -> bytes:
    """A raw page's body: ``00 ‖ 01 ‖ u32 head length ‖ head ‖ (u32 length ‖ bytes)*``; the
    head is the JSON-RPC reply (as ``encode`` writes it) whose result counts its ``objects``."""
    objects: list[bytes] = result.get("objects", [])
    entries = list(objects)
    head_result = {k: v for k, v in result.items() if k not in ("objects", "part")}
    head_result["objects"] = len(objects)
    if "part_of" in result:
        entries.append(result["part"])
    head = encode({"jsonrpc": "2.0", "id": request_id, "result": head_result})
    out = [bytes((PAGE_MARK, PAGE_VERSION)), len(head).to_bytes(_U32, "big"), head]
    for entry in entries:
        if len(entry) > 0xFFFF_FFFF:
            raise FrameError("an object too large for a raw page")
        out.append(len(entry).to_bytes(_U32, "big"))
        out.append(entry)
    return b"".join(out)


def is_page(body: bytes | bytearray) -> bool:
    return len(body) > 0 and body[0] == PAGE_MARK


def decode_page(body: bytes | bytearray, request_id: int | str) -> dict[str, Any]:
    """The result of a raw page replying to request ``request_id``: its head's result with
    ``objects`` the list of their bytes (and ``part``, with ``part_of``). BadMessage for a body
    cut short, with bytes after its last object, of another version, or whose head is not a
    JSON-RPC reply carrying a result that counts its objects."""
    view = memoryview(body)
    if len(view) < 2 + _U32 or view[0] != PAGE_MARK:
        raise BadMessage("a raw page cut short")
    if view[1] != PAGE_VERSION:
        raise BadMessage("a raw page of another version")
    at = 2 + _U32
    end = at + int.from_bytes(view[2:at], "big")
    if end > len(view):
        raise BadMessage("a raw page cut short")
    wired, error = check_reply(decode(bytes(view[at:end])), request_id)
    if error is not None:
        raise BadMessage("a raw page that carries an error")
    result = from_wire(wired)
    if not isinstance(result, dict) or "part" in result:
        raise BadMessage("a raw page's head is not a page")
    count = result.get("objects")
    if not isinstance(count, int) or isinstance(count, bool) or count < 0:
        raise BadMessage("a raw page's head does not count its objects")
    total = count + (1 if "part_of" in result else 0)
    if total * _U32 > len(view) - end:  # each takes at least its length: judged up front
        raise BadMessage("a raw page cut short")
    entries: list[bytes] = []
    at = end
    for _ in range(total):
        start = at + _U32
        if start > len(view):
            raise BadMessage("a raw page cut short")
        at = start + int.from_bytes(view[start - _U32 : start], "big")
        if at > len(view):
            raise BadMessage("a raw page cut short")
        entries.append(bytes(view[start:at]))
    if at != len(view):
        raise BadMessage("a raw page with bytes after its last object")
    if "part_of" in result:
        result["part"] = entries.pop()
    result["objects"] = entries
    return result
