"""The SSH server of the peer port: the node key is the host key; the peer's NodeId is bound
after public-key authentication; connections and channels are counted against the limits
(network/limits.py); each `polykey` subsystem channel goes to network/rpcserver.py and each
`git-upload-pack` / `git-receive-pack` exec request (stock git) to the git handler. Nothing is
read before authentication.

A node registered with a relay serves the connections the relay forwards on the registration
itself (``serve_relayed``): each arrives named by the address the relay sees its client at,
and that address, not the relay's, is what its handshakes count against.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from polykey.ids import NodeId, encode_node_id, node_id_from_bytes
from polykey.network.limits import (
    CHANNEL_WINDOW,
    HELLO_TIMEOUT_S,
    IDLE_CONNECTION_S,
    IDLE_S,
    LOGIN_TIMEOUT_S,
    MAX_CHANNELS,
    MAX_CHANNELS_PER_CONNECTION,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_PEER,
    MAX_HANDSHAKES_PER_ADDRESS,
    MAX_STRANGER_CHANNELS,
    MAX_STRANGER_CHANNELS_PER_CONNECTION,
    MAX_STRANGER_CONNECTIONS,
    MAX_UNAUTHENTICATED,
    SMALL_WINDOW,
    PeerLimits,
    count_down,
)
from polykey.network.rpcserver import Handler, rpc_channel
from polykey.network.sshlib import asyncssh
from polykey.network.wire import SUBSYSTEM

log = logging.getLogger("polykey.network")

# what a relayed connection counts against when its relay names no IP address and port as its
# origin (a relay of before origins, or one that sends anything else): all such share one count
UNNAMED_ORIGIN = "relayed (origin not named)"


def node_id_of(key: asyncssh.SSHKey) -> NodeId | None:
    if key.get_algorithm() != "ssh-ed25519":
        return None
    blob = key.public_data  # string "ssh-ed25519" || string pk
    return node_id_from_bytes(blob[-32:])


_MIN_SFTP_VERSION = 3  # unused: SFTP is not served


class _CountedProcess(asyncssh.SSHServerProcess[bytes]):
    """A session that counts against its connection's channels from the moment it opens (not
    only once it asks for a command) until its channel closes, and that is closed if it has not
    asked for its command within ``start_timeout`` seconds of opening."""

    def __init__(
        self, factory: Callable[..., Any], release: Callable[[], None], start_timeout: float
    ) -> None:
        super().__init__(factory, None, _MIN_SFTP_VERSION, False)
        self._release: Callable[[], None] | None = release
        self.start_timeout = start_timeout
        self.opened = 0.0  # loop time the channel opened: the hello is due from then
        self._unstarted: asyncio.TimerHandle | None = None

    def connection_made(self, chan: Any) -> None:
        super().connection_made(chan)
        loop = asyncio.get_running_loop()
        self.opened = loop.time()
        self._unstarted = loop.call_later(self.start_timeout, self._expire)

    def _expire(self) -> None:
        self._unstarted = None
        peer = self.get_extra_info("peer_node_id")
        who = f" from {encode_node_id(peer)}" if peer is not None else ""
        log.warning("closed a channel%s: no command asked within %.0f s", who, self.start_timeout)
        with contextlib.suppress(Exception):
            self.close()

    def session_started(self) -> None:
        if self._unstarted is not None:
            self._unstarted.cancel()
            self._unstarted = None
        super().session_started()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._unstarted is not None:
            self._unstarted.cancel()
            self._unstarted = None
        release, self._release = self._release, None
        try:
            super().connection_lost(exc)
        finally:
            if release is not None:
                release()


class _Server(asyncssh.SSHServer):
    def __init__(
        self,
        limits: PeerLimits,
        process: Callable[..., Any],
        idle: float = IDLE_S,
        relay: Any = None,
        relayed: bool = False,
    ) -> None:
        self.limits = limits
        self.relayed = relayed  # its connections are forwarded by the relay this node uses
        self.process = process
        self.relay = relay  # network.relay.Relay on an agent started with --relay
        self.relaying = False
        self.idle = idle  # the request timeout (the hello's is at most HELLO_TIMEOUT_S)
        self.conn: asyncssh.SSHServerConnection | None = None
        self.candidate: NodeId | None = None
        self.bound: NodeId | None = None
        self.counted = False
        self.address = ""
        self.stranger = False
        self.channels = 0
        self.stranger_channels = 0
        self.idle_timer: asyncio.TimerHandle | None = None

    def session_requested(self) -> Any:
        limits = self.limits
        if self.channels >= MAX_CHANNELS_PER_CONNECTION or limits.channels >= MAX_CHANNELS:
            log.warning("refused a channel: too many open")
            return False
        # judged at each channel: a node granted (or refused) meanwhile is treated as it is now
        stranger = self.bound is not None and limits.is_stranger(self.bound)
        if stranger and (
            self.stranger_channels >= MAX_STRANGER_CHANNELS_PER_CONNECTION
            or limits.stranger_channels >= MAX_STRANGER_CHANNELS
        ):
            log.warning("refused a channel of a node it does not know: too many open")
            return False
        self.channels += 1
        limits.channels += 1
        if stranger:
            self.stranger_channels += 1
            limits.stranger_channels += 1
        self._disarm()
        process = _CountedProcess(
            self.process,
            lambda: self._release_channel(stranger),
            min(HELLO_TIMEOUT_S, self.idle),
        )
        small = self.bound is not None and not limits.may_send_large(self.bound)
        if small and self.conn is not None:  # a small window: little to buffer unread
            return self.conn.create_server_channel(window=SMALL_WINDOW), process
        return process

    def _release_channel(self, stranger: bool) -> None:
        self.channels -= 1
        self.limits.channels -= 1
        if stranger:
            self.stranger_channels -= 1
            self.limits.stranger_channels -= 1
        if self.channels == 0:
            self._arm()

    def _arm(self) -> None:
        """Close the connection if it stays without channels for IDLE_CONNECTION_S."""
        self._disarm()
        if self.conn is not None and not self.relaying:
            conn = self.conn
            self.idle_timer = asyncio.get_running_loop().call_later(IDLE_CONNECTION_S, conn.close)

    def _disarm(self) -> None:
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None

    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        limits = self.limits
        if limits.connections >= MAX_CONNECTIONS or limits.unauthenticated >= MAX_UNAUTHENTICATED:
            log.warning("turned a connection away: too many open")
            conn.close()
            return
        address = self._origin(conn)
        if limits.handshakes.get(address, 0) >= MAX_HANDSHAKES_PER_ADDRESS:
            log.warning("turned a connection from %s away: too many handshakes", address[:60])
            conn.close()
            return
        self.counted = True
        self.address = address
        limits.connections += 1
        limits.unauthenticated += 1
        limits.handshakes[address] = limits.handshakes.get(address, 0) + 1

    def _origin(self, conn: asyncssh.SSHServerConnection) -> str:
        """What this connection's handshakes count against: the address it comes from; for
        one forwarded by the relay, the address the relay sees its client at (the relay names
        it in the forward), so that the clients of one relay do not share one count."""
        if not self.relayed:
            peername = conn.get_extra_info("peername")
            return str(peername[0]) if peername else ""
        origin = conn.get_extra_info("remote_peername") or ("", 0)
        try:  # the relay's word: an IP address and a port, or nothing is taken from it
            host, port = str(ipaddress.ip_address(str(origin[0])[:64])), int(origin[1])
        except (TypeError, ValueError, IndexError):
            return UNNAMED_ORIGIN
        if not 0 <= port <= 65535:
            return UNNAMED_ORIGIN
        conn.set_extra_info(peername=(host, port))  # peer.observed: as relayed
        return f"relayed {host}"

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
            count_down(limits.handshakes, self.address)
        else:
            count_down(limits.per_peer, self.bound)

    def begin_auth(self, username: str) -> bool:
        return True

    # A relay (network/relay.py) takes registrations (a remote forward under the node's own
    # NodeId) and relays connections to registered nodes; any other node refuses both.
    # A connection that registered or relayed is not closed for having no channel.
    def server_requested(self, listen_host: str, listen_port: int) -> Any:
        if self.relay is None or self.bound is None or self.conn is None:
            return False
        registration = self.relay.register(self.conn, self.bound, listen_host, listen_port)
        if registration:
            self.relaying = True
            self._disarm()
        return registration

    def connection_requested(self, dest_host: str, dest_port: int, *_: Any) -> Any:
        if self.relay is None or self.bound is None:
            return False
        assert self.conn is not None
        peername = self.conn.get_extra_info("peername") or ("", 0)
        source = (str(peername[0]), int(peername[1]))  # named to the node in the forward
        relayed = self.relay.connect(self.bound, dest_host, dest_port, source)  # or refused
        self.relaying = True
        self._disarm()
        return relayed

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
            count_down(self.limits.handshakes, self.address)
            self.limits.per_peer[peer] = self.limits.per_peer.get(peer, 0) + 1
            if self.limits.is_stranger(peer):
                self.stranger = True
                self.limits.strangers += 1
            self._arm()
        self.conn.set_extra_info(peer_node_id=peer)


GIT_SERVICES = ("git-upload-pack", "git-receive-pack")
GitHandler = Callable[[NodeId, str, str, Any], Awaitable[None]]  # peer, service, path, process


async def serve(
    host: str,
    port: int,
    host_key: asyncssh.SSHKey,
    handler: Handler,
    git: GitHandler | None = None,
    limits: PeerLimits | None = None,
    idle: float = IDLE_S,
    relay: Any = None,
) -> asyncssh.SSHAcceptor:
    """Accept peers; every RPC on a `polykey` channel goes to ``handler(peer, method, params)``,
    and stock git's upload-pack and receive-pack to ``git(peer, service, path, process)``.
    ``idle``: the request timeout of `polykey` channels (see network/limits.py)."""
    limits = limits or PeerLimits()
    factory = _server_factory(handler, git, limits, idle, relay)
    return await asyncssh.create_server(factory, host, port, **_server_options(host_key))


async def serve_socket(
    sock: Any,
    host_key: asyncssh.SSHKey,
    handler: Handler,
    git: GitHandler | None = None,
    limits: PeerLimits | None = None,
    idle: float = IDLE_S,
) -> asyncssh.SSHServerConnection:
    """Serve one peer on a socket already connected (a punched one, network/punch.py) as
    ``serve`` serves those it accepts: the same checks, limits and handlers."""
    factory = _server_factory(handler, git, limits or PeerLimits(), idle, None)
    options = _server_options(host_key)
    conn: asyncssh.SSHServerConnection = await asyncssh.run_server(
        sock, server_factory=factory, **options
    )
    return conn


async def serve_relayed(
    conn: asyncssh.SSHClientConnection,
    name: str,
    port: int,
    host_key: asyncssh.SSHKey,
    handler: Handler,
    git: GitHandler | None = None,
    limits: PeerLimits | None = None,
    idle: float = IDLE_S,
) -> asyncssh.SSHAcceptor:
    """A registration (network/relay.py): a remote forward named ``name:port`` on ``conn``,
    the connection to the relay, whose forwarded channels are served as ``serve`` serves what
    it accepts, each counted against the address the relay names as its origin."""
    factory = _server_factory(handler, git, limits or PeerLimits(), idle, None, relayed=True)
    acceptor: asyncssh.SSHAcceptor = await asyncssh.create_server(
        factory, name, port, tunnel=conn, **_server_options(host_key)
    )
    return acceptor


def _server_options(host_key: asyncssh.SSHKey) -> dict[str, Any]:
    return {
        "server_host_keys": [host_key],
        "encoding": None,
        "window": CHANNEL_WINDOW,
        "allow_scp": False,
        "agent_forwarding": False,
        "x11_forwarding": False,
        "allow_pty": False,
        "line_editor": False,
        "login_timeout": LOGIN_TIMEOUT_S,
    }


def _server_factory(
    handler: Handler,
    git: GitHandler | None,
    limits: PeerLimits,
    idle: float,
    relay: Any,
    relayed: bool = False,
) -> Callable[[], _Server]:
    async def process(proc: asyncssh.SSHServerProcess[bytes]) -> None:
        peer = proc.get_extra_info("peer_node_id")
        service = (proc.command or "").partition(" ")[0]
        if peer is not None and git is not None and service in GIT_SERVICES:
            await _git_channel(proc, peer, service, git)
        elif proc.subsystem == SUBSYSTEM and peer is not None:
            opened = getattr(proc, "opened", None) or asyncio.get_running_loop().time()
            await rpc_channel(proc, peer, handler, limits, idle, opened)
        else:
            proc.stderr.write(b"only the polykey subsystem is served\n")
            proc.exit(1)

    return lambda: _Server(limits, process, idle, relay, relayed)


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
