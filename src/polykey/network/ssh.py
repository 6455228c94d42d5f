"""SSH between nodes: the node key is the host key and the client key; NodeIds are pinned.

This module is the dialing side (``PeerClient``: it pins the NodeId it meant to reach as the only
acceptable host key) and the one name the rest of the code imports the peer transport by; the
serving side lives in network/sshserver.py (connections, authentication, stock git),
network/rpcserver.py (a `polykey` channel's requests) and network/limits.py, the frames both
sides read in network/wire.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from polykey import codec
from polykey.errors import PolykeyError
from polykey.ids import NodeId, encode_node_id
from polykey.network.limits import HELLO_FRAME, MAX_CHANNELS_PER_CONNECTION, SMALL_FRAME, PeerLimits
from polykey.network.rpcserver import OBSERVED, rpc_channel
from polykey.network.sshlib import asyncssh
from polykey.network.sshserver import GIT_SERVICES, GitHandler, node_id_of, serve, serve_socket
from polykey.network.wire import (
    MAX_FRAME,
    PROTOCOL_VERSION,
    REPLY_TIMEOUT_S,
    SUBSYSTEM,
    PeerError,
    PeerUnreachable,
    frame_of,
    page_of,
    parse,
    read_frame,
    read_reply,
)

__all__ = [  # the names the peer transport is known by, wherever they live
    "GIT_SERVICES",
    "HELLO_FRAME",
    "MAX_CHANNELS_PER_CONNECTION",
    "MAX_FRAME",
    "OBSERVED",
    "PROTOCOL_VERSION",
    "REPLY_TIMEOUT_S",
    "SMALL_FRAME",
    "SUBSYSTEM",
    "GitHandler",
    "PeerClient",
    "PeerError",
    "PeerLimits",
    "PeerUnreachable",
    "_frame",
    "_read_frame",
    "_rpc_channel",
    "node_id_of",
    "serve",
    "serve_socket",
    "ssh_key",
]
_frame = frame_of  # as tests/agent and tests/fuzz call them
_read_frame = read_frame
_rpc_channel = rpc_channel

log = logging.getLogger("polykey.network")
_SILENT_HINT = "The other node accepted the request but did not answer; try again later."


def ssh_key(openssh_private_pem: bytes) -> asyncssh.SSHKey:
    return asyncssh.import_private_key(openssh_private_pem)


def _remote_hint(data: Any) -> str | None:
    """Keep the class hint: the other node's own hints speak of its commands, not ours."""
    return None


class PeerClient:
    """An SSH connection to one node whose NodeId is pinned, carrying RPCs."""

    def __init__(self, conn: asyncssh.SSHClientConnection, writer: Any, reader: Any) -> None:
        self.conn = conn
        self.writer = writer
        self.reader = reader
        self.next_id = 1
        self.hello: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls,
        client_key: asyncssh.SSHKey,
        node_id: NodeId,
        host: str,
        port: int,
        tunnel: Any = None,
        sock: Any = None,
    ) -> PeerClient:
        """A connection to ``node_id`` at ``host:port`` (through ``tunnel``, a relay, if
        given: ``host`` is then the NodeId; or on ``sock``, a socket already connected
        there), its key pinned, and a first channel on it."""
        from polykey.crypto.signing import openssh_public_line

        pinned = asyncssh.import_public_key(openssh_public_line(bytes(node_id)))
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    "" if sock is not None else host,
                    () if sock is not None else port,
                    sock=sock,
                    username="polykey",
                    client_keys=[client_key],
                    known_hosts=([pinned], [], []),
                    agent_path=None,
                    config=None,
                    tunnel=tunnel,
                ),
                timeout=15,
            )
        except (OSError, asyncssh.Error, TimeoutError) as exc:
            raise PeerUnreachable(f"{encode_node_id(node_id)} at {host}:{port} ({exc})") from None
        try:
            return await cls.over(conn, node_id)
        except PolykeyError:
            conn.close()
            raise

    @classmethod
    async def over(cls, conn: asyncssh.SSHClientConnection, node_id: NodeId) -> PeerClient:
        """A new `polykey` channel on an open connection, after the version hello."""
        try:
            writer, reader, _ = await conn.open_session(subsystem=SUBSYSTEM, encoding=None)
        except (OSError, asyncssh.Error) as exc:
            raise PeerUnreachable(f"{encode_node_id(node_id)}: {exc}") from None
        client = cls(conn, writer, reader)
        try:
            hello = await client.call("peer.hello", {"version": PROTOCOL_VERSION})
        except PolykeyError:
            client.close_channel()
            raise
        if hello.get("version") != PROTOCOL_VERSION:
            client.close_channel()
            raise PeerError(
                f"the node speaks protocol {str(hello.get('version'))[:20]!r}, not 1",
                hint="The two nodes run versions of Polykey that cannot talk; update the older.",
            )
        client.hello = hello
        return client

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        request_id = self.next_id
        self.next_id += 1
        frame = frame_of({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        try:
            self.writer.write(frame)
        except (OSError, asyncssh.Error) as exc:  # the other end closed the channel
            raise PeerUnreachable(f"the connection broke ({type(exc).__name__})") from None
        try:
            body = await asyncio.wait_for(read_reply(self.reader), REPLY_TIMEOUT_S)
            if params.get("raw") is True and codec.is_page(body):  # asked for: a raw page
                return page_of(body, request_id)
            reply = parse(body)
        except TimeoutError:
            self.close_channel()
            raise PeerUnreachable(
                f"no answer to {method} within {REPLY_TIMEOUT_S:.0f} s", hint=_SILENT_HINT
            ) from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncssh.Error) as exc:
            raise PeerUnreachable(f"the connection broke ({type(exc).__name__})") from None
        try:
            wired, error = codec.check_reply(reply, request_id)
        except codec.BadMessage:
            raise PeerUnreachable("a malformed reply") from None
        del reply
        if error is not None:
            data = error.get("data")
            hint = _remote_hint(data) if isinstance(data, dict) else None
            raise PeerError(error["message"][:500], hint=hint)
        try:
            result = codec.from_wire(wired)
        except codec.BadMessage:  # bad base64, text not Unicode, nested too deep
            raise PeerError("the other node sent a malformed reply") from None
        if not isinstance(result, dict):
            raise PeerUnreachable("a malformed reply")
        return result

    def close_channel(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    async def channel_closed(self, timeout: float = 5.0) -> None:
        """Close the channel and wait until the other side has closed it too (it has then
        counted it as gone, so a new channel may take its place)."""
        self.close_channel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.channel.wait_closed(), timeout)

    def close(self) -> None:
        self.close_channel()
        self.conn.close()
