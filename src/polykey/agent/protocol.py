"""Frames on the agent's Unix socket: ``u32 length ‖ JSON-RPC 2.0 message`` (docs/spec/agent.md).

A frame larger than MAX_FRAME, a body that is not a JSON object (or one nested deeper than
codec.MAX_DEPTH), or a request without the fields JSON-RPC 2.0 requires closes the connection;
the agent goes on serving others.
"""

from __future__ import annotations

import json
import struct
from typing import Any

from polykey import codec

MAX_FRAME = 192 * 1024 * 1024  # a 100 MB secret, base64-encoded, fits
HEADER = struct.Struct(">I")
PROTOCOL = "polykey-agent/1"
RAW = b"\x00"
"""First byte of a raw reply (``secrets.cat`` with ``"raw": true``): the values, concatenated."""

# JSON-RPC 2.0 error codes, and ours (-32000..-32099 are for the implementation)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
POLYKEY_ERROR = -32000
SESSION_INVALID = -32001


class FrameError(Exception):
    """The peer sent something that is not a valid frame; the connection must close."""


def encode(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    if len(body) > MAX_FRAME:
        raise FrameError("message too large")
    return HEADER.pack(len(body)) + body


def decode_body(body: bytes) -> dict[str, Any]:
    try:
        message = json.loads(body)
    except RecursionError:  # deeper than json.loads itself goes
        raise FrameError("nested too deep") from None
    except (ValueError, UnicodeDecodeError):
        raise FrameError("not JSON") from None
    if not isinstance(message, dict):
        raise FrameError("not a JSON object")
    if not codec.within_depth(message):  # anything walking it by recursion would fail
        raise FrameError("nested too deep")
    return message


def check_request(message: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """(id, method, params) of a valid request."""
    if message.get("jsonrpc") != "2.0" or not isinstance(message.get("method"), str):
        raise FrameError("not a JSON-RPC 2.0 request")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise FrameError("params must be an object")
    request_id = message.get("id")
    if request_id is not None and not isinstance(request_id, (int, str)):
        raise FrameError("bad id")
    return request_id, message["method"], params


def from_wire(value: Any) -> Any:
    """Decode {"$b64": ...} values; bad base64 or too deep a document is a frame error (the
    connection closes)."""
    try:
        return codec.from_wire(value)
    except codec.BadEncoding as exc:
        raise FrameError(str(exc)) from None


to_wire = codec.to_wire
