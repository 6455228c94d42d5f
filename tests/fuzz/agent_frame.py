"""The agent's socket frames (agent/protocol.py, codec.from_wire), read as the agent reads them.

The input is the byte stream a client writes to the socket: ``u32 length ‖ JSON`` frames, one
after the other (``\\xfe\\xfe n c`` in a body is ``c`` repeated, the length counting it as
written: ``_bytes.expand``). Each frame goes through what ``agent.server.Agent._connection``
runs before a method is dispatched: the size check, ``decode_body``, ``check_request``,
``from_wire``, the ``raw`` flag, and the session token check (``Sessions.check``, whose refusal
is :class:`SessionInvalid`, answered as an error). The documented refusal is
:class:`FrameError` (the connection closes); the stream ending early is
:class:`asyncio.IncompleteReadError` there, the end of the input here. A valid request's reply
is encoded too (the agent echoes the id), as ``_answer`` does.
"""

from __future__ import annotations

import contextlib

from polykey.agent import protocol
from polykey.agent.sessions import SessionInvalid, Sessions
from tests.fuzz._bytes import expand

MAX_FRAMES = 16
SESSIONS = Sessions()
SESSIONS.issue()  # one live session, so a lookup has something to miss


def one_input(data: bytes) -> None:
    pos = 0
    for _ in range(MAX_FRAMES):
        header = data[pos : pos + protocol.HEADER.size]
        if len(header) < protocol.HEADER.size:
            return
        pos += protocol.HEADER.size
        (size,) = protocol.HEADER.unpack(header)
        if size > protocol.MAX_FRAME:
            return  # the agent closes the connection
        body = data[pos : pos + size]
        if len(body) < size:
            return  # IncompleteReadError: the connection closes
        pos += size
        body = expand(body)  # as if the length said so
        try:
            request_id, name, params = protocol.check_request(protocol.decode_body(body))
            params = protocol.from_wire(params)
        except protocol.FrameError:
            return  # the connection closes
        assert isinstance(name, str) and isinstance(params, dict)
        assert request_id is None or isinstance(request_id, int | str)
        params.pop("raw", False)
        token = params.pop("token", None)
        with contextlib.suppress(SessionInvalid):
            SESSIONS.check(token)
        reply = {"jsonrpc": "2.0", "id": request_id, "result": protocol.to_wire(params)}
        protocol.encode(reply)
