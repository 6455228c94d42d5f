"""SSH between nodes: the node key is the host key and the client key; NodeIds are pinned.

The server binds the peer's NodeId after public-key authentication and hands each `polykey`
subsystem channel to a handler with that NodeId, and each `git-upload-pack` / `git-receive-pack`
exec request (stock git) to the git handler; nothing is read before authentication. The
client pins the NodeId it meant to reach as the only acceptable host key.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import asyncssh

from polykey.errors import PolykeyError
from polykey.ids import NodeId, encode_node_id, node_id_from_bytes

log = logging.getLogger("polykey.network")
SUBSYSTEM = "polykey"
MAX_FRAME = 64 * 1024 * 1024
PROTOCOL_VERSION = 1
Handler = Callable[[NodeId, str, dict[str, Any]], Awaitable[dict[str, Any]]]


class PeerUnreachable(PolykeyError):
    """The node could not be reached."""

    exit_code = 50
    hint = "Check the address with `pk nodes list`, and that its agent runs with --port."


class PeerError(PolykeyError):
    """The other node refused the request."""

    exit_code = 51
    hint = "It may have no such vault, or not share it with this node (`pk vaults scan NODEID`)."


def ssh_key(openssh_private_pem: bytes) -> asyncssh.SSHKey:
    return asyncssh.import_private_key(openssh_private_pem)


def node_id_of(key: asyncssh.SSHKey) -> NodeId | None:
    if key.get_algorithm() != "ssh-ed25519":
        return None
    blob = key.public_data  # string "ssh-ed25519" || string pk
    return node_id_from_bytes(blob[-32:])


# What one agent holds open for peers, so that no peer (or stranger) can exhaust it. A node's
# own dialer keeps one connection per peer and opens a few channels on it; stock git opens one
# connection per command. Past a limit, the newcomer is turned away and the rest keep working.
MAX_CONNECTIONS = 256  # open SSH connections in all
MAX_UNAUTHENTICATED = 64  # of them, still in the handshake or authentication
MAX_HANDSHAKES_PER_ADDRESS = 16  # of those, from one network address
MAX_CONNECTIONS_PER_PEER = 16  # authenticated connections of one NodeId
MAX_CHANNELS_PER_CONNECTION = 32  # open channels (polykey or git) on one connection
LOGIN_TIMEOUT_S = 20  # from TCP accept to authenticated
# Bytes a peer may send on a channel before the server reads them (SSH's window): with the
# channel limit, what one connection can make the server buffer is bounded.
CHANNEL_WINDOW = 512 * 1024
MAX_CHANNELS = 1024  # open channels on all connections
# NodeIds cost nothing to make: those the node does not know share a few connections, so that
# strangers cannot take the slots of the nodes it shares with (a stranger can do nothing but
# ask; notifications from unknown nodes are refused anyway).
MAX_STRANGER_CONNECTIONS = 32
# An authenticated connection with no channel open this long is closed (the dialer's pool
# closes its own after 5 idle minutes).
IDLE_CONNECTION_S = 600.0


def _less(counts: dict[Any, int], key: Any) -> None:
    """One fewer for ``key``; a count reaching 0 is removed."""
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class PeerLimits:
    """The counts behind the limits, shared by the connections of one server (read by the
    agent's status)."""

    def __init__(self) -> None:
        self.connections = 0
        self.unauthenticated = 0
        self.channels = 0
        self.strangers = 0  # authenticated connections of NodeIds not in ``known``
        self.handshakes: dict[str, int] = {}  # connections still authenticating, by address
        self.per_peer: dict[NodeId, int] = {}
        # The NodeIds this node deals with (granted a vault, or in its node graph), kept fresh by
        # the agent; None: every NodeId counts as known.
        self.known: frozenset[bytes] | None = None

    def is_stranger(self, node_id: NodeId) -> bool:
        return self.known is not None and bytes(node_id) not in self.known


_MIN_SFTP_VERSION = 3  # unused: SFTP is not served


class _CountedProcess(asyncssh.SSHServerProcess[bytes]):
    """A session that counts against its connection's channels from the moment it opens (not
    only once it asks for a command) until its channel closes."""

    def __init__(self, factory: Callable[..., Any], release: Callable[[], None]) -> None:
        super().__init__(factory, None, _MIN_SFTP_VERSION, False)
        self._release: Callable[[], None] | None = release

    def connection_lost(self, exc: Exception | None) -> None:
        release, self._release = self._release, None
        try:
            super().connection_lost(exc)
        finally:
            if release is not None:
                release()


class _Server(asyncssh.SSHServer):
    def __init__(self, limits: PeerLimits, process: Callable[..., Any]) -> None:
        self.limits = limits
        self.process = process
        self.conn: asyncssh.SSHServerConnection | None = None
        self.candidate: NodeId | None = None
        self.bound: NodeId | None = None
        self.counted = False
        self.address = ""
        self.stranger = False
        self.channels = 0
        self.idle: asyncio.TimerHandle | None = None

    def session_requested(self) -> Any:
        limits = self.limits
        if self.channels >= MAX_CHANNELS_PER_CONNECTION or limits.channels >= MAX_CHANNELS:
            log.warning("refused a channel: too many open")
            return False
        self.channels += 1
        limits.channels += 1
        self._disarm()
        return _CountedProcess(self.process, self._release_channel)

    def _release_channel(self) -> None:
        self.channels -= 1
        self.limits.channels -= 1
        if self.channels == 0:
            self._arm()

    def _arm(self) -> None:
        """Close the connection if it stays without channels for IDLE_CONNECTION_S."""
        self._disarm()
        if self.conn is not None:
            conn = self.conn
            self.idle = asyncio.get_running_loop().call_later(IDLE_CONNECTION_S, conn.close)

    def _disarm(self) -> None:
        if self.idle is not None:
            self.idle.cancel()
            self.idle = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        limits = self.limits
        if limits.connections >= MAX_CONNECTIONS or limits.unauthenticated >= MAX_UNAUTHENTICATED:
            log.warning("turned a connection away: too many open")
            conn.close()
            return
        peername = conn.get_extra_info("peername")
        address = str(peername[0]) if peername else ""
        if limits.handshakes.get(address, 0) >= MAX_HANDSHAKES_PER_ADDRESS:
            log.warning("turned a connection from %s away: too many handshakes", address[:60])
            conn.close()
            return
        self.counted = True
        self.address = address
        limits.connections += 1
        limits.unauthenticated += 1
        limits.handshakes[address] = limits.handshakes.get(address, 0) + 1

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.counted:
            return
        self.counted = False
        limits = self.limits
        limits.connections -= 1
        self._disarm()
        if self.stranger:
            limits.strangers -= 1
        if self.bound is None:
            limits.unauthenticated -= 1
            _less(limits.handshakes, self.address)
        else:
            _less(limits.per_peer, self.bound)

    def begin_auth(self, username: str) -> bool:
        return True

    def password_auth_supported(self) -> bool:
        return False

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        node_id = node_id_of(key)
        if node_id is None:
            return False
        limits = self.limits
        if limits.per_peer.get(node_id, 0) >= MAX_CONNECTIONS_PER_PEER or (
            limits.is_stranger(node_id) and limits.strangers >= MAX_STRANGER_CONNECTIONS
        ):
            log.warning("turned %s away: too many connections", encode_node_id(node_id))
            return False
        self.candidate = node_id  # bound only once the signature checks out
        return True

    def auth_completed(self) -> None:
        assert self.conn is not None
        peer = self.candidate
        if peer is not None and self.counted and self.bound is None:
            self.bound = peer
            self.limits.unauthenticated -= 1
            _less(self.limits.handshakes, self.address)
            self.limits.per_peer[peer] = self.limits.per_peer.get(peer, 0) + 1
            if self.limits.is_stranger(peer):
                self.stranger = True
                self.limits.strangers += 1
            self._arm()
        self.conn.set_extra_info(peer_node_id=peer)


async def _read_frame(reader: Any) -> dict[str, Any] | None:
    header = await reader.readexactly(4)
    size = int.from_bytes(header, "big")
    if size > MAX_FRAME:
        raise ValueError("frame too large")
    body = await reader.readexactly(size)
    doc = json.loads(body)
    if not isinstance(doc, dict):
        raise ValueError("not an object")
    return doc


def _frame(doc: dict[str, Any]) -> bytes:
    from polykey.codec import to_wire

    body = json.dumps(to_wire(doc), separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


# A peer that accepts a request and never answers must not hold the caller forever; a whole
# vault's objects come in one frame, so this is generous.
REPLY_TIMEOUT_S = 120.0
_SILENT_HINT = "The other node accepted the request but did not answer; try again later."

GIT_SERVICES = ("git-upload-pack", "git-receive-pack")
GitHandler = Callable[[NodeId, str, str, Any], Awaitable[None]]  # peer, service, path, process


async def serve(
    host: str,
    port: int,
    host_key: asyncssh.SSHKey,
    handler: Handler,
    git: GitHandler | None = None,
    limits: PeerLimits | None = None,
) -> asyncssh.SSHAcceptor:
    """Accept peers; every RPC on a `polykey` channel goes to ``handler(peer, method, params)``,
    and stock git's upload-pack and receive-pack to ``git(peer, service, path, process)``."""
    limits = limits or PeerLimits()

    async def process(proc: asyncssh.SSHServerProcess[bytes]) -> None:
        peer = proc.get_extra_info("peer_node_id")
        service = (proc.command or "").partition(" ")[0]
        if peer is not None and git is not None and service in GIT_SERVICES:
            await _git_channel(proc, peer, service, git)
        elif proc.subsystem == SUBSYSTEM and peer is not None:
            await _rpc_channel(proc, peer, handler)
        else:
            proc.stderr.write(b"only the polykey subsystem is served\n")
            proc.exit(1)

    return await asyncssh.create_server(
        lambda: _Server(limits, process),
        host,
        port,
        server_host_keys=[host_key],
        encoding=None,
        window=CHANNEL_WINDOW,
        allow_scp=False,
        agent_forwarding=False,
        x11_forwarding=False,
        allow_pty=False,
        line_editor=False,
        login_timeout=LOGIN_TIMEOUT_S,
    )


async def _git_channel(
    proc: asyncssh.SSHServerProcess[bytes], peer: NodeId, service: str, git: GitHandler
) -> None:
    import shlex

    try:
        path = shlex.split(proc.command or "")[1]
        await git(peer, service, path, proc)
    except (ValueError, IndexError, OSError, asyncssh.Error) as exc:
        log.warning("%s for %s failed: %s", service, encode_node_id(peer), exc)
    finally:
        with contextlib.suppress(Exception):
            proc.exit(0)


async def _rpc_channel(
    proc: asyncssh.SSHServerProcess[bytes], peer: NodeId, handler: Handler
) -> None:
    """One `polykey` channel: the version hello first, then requests answered in order."""
    from polykey.codec import from_wire

    greeted = False
    try:
        while True:
            try:
                request = await _read_frame(proc.stdin)
            except (asyncio.IncompleteReadError, ConnectionError):
                break
            if request is None:
                break
            method = request.get("method")
            params = from_wire(request.get("params", {}))
            if not isinstance(method, str) or not isinstance(params, dict):
                break
            if not greeted:  # the protocol version is exchanged first, or nothing happens
                if method != "peer.hello" or params.get("version") != PROTOCOL_VERSION:
                    log.warning("closed a channel from %s: no hello", encode_node_id(peer))
                    break
                greeted = True
            try:
                result = await handler(peer, method, params)
                reply = {"jsonrpc": "2.0", "id": request.get("id"), "result": result}
            except PolykeyError as exc:
                reply = {
                    "jsonrpc": "2.0",
                    "id": request.get("id"),
                    "error": {
                        "code": -32000,
                        "message": exc.message,
                        "data": {"exit_code": exc.exit_code, "hint": exc.user_hint},
                    },
                }
            proc.stdout.write(_frame(reply))
            try:  # the next request waits until this reply is taken: no replies pile up
                await asyncio.wait_for(proc.stdout.drain(), REPLY_TIMEOUT_S)
            except (TimeoutError, ConnectionError, asyncssh.Error):
                log.warning("closed a channel from %s: replies not read", encode_node_id(peer))
                break
    except (ValueError, UnicodeDecodeError) as exc:
        log.warning("closed a channel from %s: %s", encode_node_id(peer), exc)
    finally:
        with contextlib.suppress(Exception):
            proc.exit(0)


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
        cls, client_key: asyncssh.SSHKey, node_id: NodeId, host: str, port: int
    ) -> PeerClient:
        from polykey.crypto.signing import openssh_public_line

        pinned = asyncssh.import_public_key(openssh_public_line(bytes(node_id)))
        try:
            conn = await asyncio.wait_for(
                asyncssh.connect(
                    host,
                    port,
                    username="polykey",
                    client_keys=[client_key],
                    known_hosts=([pinned], [], []),
                    agent_path=None,
                    config=None,
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
            raise PeerError(f"the node speaks protocol {hello.get('version')!r}, not 1")
        client.hello = hello
        return client

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from polykey.codec import from_wire

        frame = _frame({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        self.next_id += 1
        try:
            self.writer.write(frame)
        except (OSError, asyncssh.Error) as exc:  # the other end closed the channel
            raise PeerUnreachable(f"the connection broke ({type(exc).__name__})") from None
        try:
            reply = await asyncio.wait_for(_read_frame(self.reader), REPLY_TIMEOUT_S)
        except TimeoutError:
            self.close_channel()
            raise PeerUnreachable(
                f"no answer to {method} within {REPLY_TIMEOUT_S:.0f} s", hint=_SILENT_HINT
            ) from None
        except RecursionError:
            raise PeerError("the other node sent a malformed reply (nested too deep)") from None
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncssh.Error) as exc:
            raise PeerUnreachable(f"the connection broke ({type(exc).__name__})") from None
        assert reply is not None
        if "error" in reply:
            err = reply["error"]
            data = err.get("data") if isinstance(err, dict) else None
            message = err.get("message") if isinstance(err, dict) else err
            hint = _remote_hint(data) if isinstance(data, dict) else None
            raise PeerError(str(message)[:500], hint=hint)
        try:
            result = from_wire(reply.get("result"))
        except (ValueError, TypeError, RecursionError):
            raise PeerError("the other node sent a malformed reply") from None
        if not isinstance(result, dict):
            raise PeerUnreachable("a malformed reply")
        return result

    def close_channel(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()

    def close(self) -> None:
        self.close_channel()
        self.conn.close()
