"""The `polykey` channel's frames on SSH streams, as both sides read and write them
(docs/spec/peer-protocol.md, "Messages"; the frames and messages are polykey.frames and
polykey.codec, shared with the agent's socket), and what a caller is told when a peer cannot be
reached or refuses.
"""

from __future__ import annotations

import asyncio
from typing import Any

from polykey import codec, frames
from polykey.errors import PolykeyError

SUBSYSTEM = "polykey"
MAX_FRAME = 64 * 1024 * 1024
PROTOCOL_VERSION = 1
READ_CHUNK = 256 * 1024


class PeerUnreachable(PolykeyError):
    """The node could not be reached."""

    exit_code = 50
    hint = "Check the address with `pk nodes list`, and that its agent runs with --port."


class PeerError(PolykeyError):
    """The other node refused the request."""

    exit_code = 51
    hint = "It may have no such vault, or not share it with this node (`pk vaults scan NODEID`)."


async def read_frame(reader: Any, limit: int = MAX_FRAME) -> dict[str, Any]:
    """One frame's message, at most ``limit`` bytes (checked before its body is read):
    frames.FrameError (a ValueError) past it or for a body that is no message."""
    size = frames.size(await reader.readexactly(frames.HEADER_SIZE), limit)
    return parse(await read_body(reader, size))


async def read_reply(reader: Any, limit: int = MAX_FRAME) -> bytearray:
    """One frame's body, at most ``limit`` bytes (checked before it is read)."""
    return await read_body(reader, frames.size(await reader.readexactly(frames.HEADER_SIZE), limit))


def page_of(body: bytearray, request_id: int) -> dict[str, Any]:
    """The result a raw page carries (codec.decode_page); a malformed one breaks the channel."""
    try:
        return codec.decode_page(body, request_id)
    except codec.BadMessage:
        raise PeerUnreachable("a malformed reply") from None


async def read_body(reader: Any, size: int, gap: float | None = None) -> bytearray:
    """``size`` bytes, gathered in one buffer as they come (the chunks are freed at once, and
    the buffer's memory goes back to the system with it); each read waits at most ``gap``."""
    body = bytearray()
    while len(body) < size:
        read = reader.read(min(size - len(body), READ_CHUNK))
        chunk = await (read if gap is None else asyncio.wait_for(read, gap))
        if not chunk:
            raise asyncio.IncompleteReadError(b"", size)
        body += chunk
    return body


def parse(body: str | bytes | bytearray) -> dict[str, Any]:
    """A frame's JSON object (codec.decode): codec.BadMessage, a ValueError, if it is none."""
    return codec.decode(body)


def frame_of(doc: dict[str, Any]) -> bytes:
    """``doc`` as one frame, bytes in it as {"$b64": ...} (codec.encode)."""
    return frames.frame(codec.encode(doc))


# A peer that accepts a request and never answers must not hold the caller forever; a whole
# vault's objects come in one frame, so this is generous.
REPLY_TIMEOUT_S = 120.0
_SILENT_HINT = "The other node accepted the request but did not answer; try again later."
