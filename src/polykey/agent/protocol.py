"""The agent's Unix socket (docs/spec/agent.md): frames of polykey.frames, at most MAX_FRAME bytes
either way, holding JSON-RPC 2.0 messages of polykey.codec.

A frame larger than MAX_FRAME, a body that is not a valid message (polykey.codec), or a request
without the fields JSON-RPC 2.0 requires closes the connection (:class:`FrameError`); the agent
goes on serving others.
"""

from __future__ import annotations

import struct
from typing import Any

from polykey import codec, frames

MAX_FRAME = frames.AGENT_MAX
HEADER = struct.Struct(">I")  # frames.HEADER_SIZE bytes: the length, big-endian
PROTOCOL = "polykey-agent/1"
RAW = frames.RAW
"""First byte of a raw reply (``secrets.cat`` with ``"raw": true``): the values, concatenated."""

# JSON-RPC 2.0 error codes, and ours (-32000..-32099 are for the implementation)
PARSE_ERROR = -32700
INVALID_REQUEST = -32600
METHOD_NOT_FOUND = -32601
INVALID_PARAMS = -32602
INTERNAL_ERROR = -32603
POLYKEY_ERROR = -32000
SESSION_INVALID = -32001

FrameError = frames.FrameError
"""The client sent something that is not a valid frame or message; the connection must close
(codec.BadMessage is one)."""


def encode(message: dict[str, Any]) -> bytes:
    """A message as one frame (bytes in it as {"$b64": ...}); FrameError past MAX_FRAME."""
    return frames.frame(codec.encode(message), MAX_FRAME)


def raw_reply(values: list[bytes]) -> bytes:
    """The frame of a raw ``secrets.cat`` reply: RAW, then the values one after the other."""
    return frames.frame(RAW + b"".join(values), MAX_FRAME)


decode_body = codec.decode
"""A body's JSON object (bytes still {"$b64": ...}); codec.BadMessage, a FrameError, if it is
not one."""
check_request = codec.check_request
"""(id, method, params) of a JSON-RPC 2.0 request; codec.BadMessage for anything else."""
from_wire = codec.from_wire
"""Decode {"$b64": ...} values; bad base64 or too deep a document is codec.BadMessage."""
to_wire = codec.to_wire
