"""SSH between nodes: the node key is the host key and the client key; NodeIds are pinned.

The server binds the peer's NodeId after public-key authentication and hands each `polykey`
subsystem channel to a handler with that NodeId, and each `git-upload-pack` / `git-receive-pack`
exec request (stock git) to the git handler; nothing is read before authentication. The
client pins the NodeId it meant to reach as the only acceptable host key.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from polykey import codec, frames
from polykey.errors import PolykeyError
from polykey.ids import NodeId, encode_node_id, node_id_from_bytes
from polykey.network.sshlib import asyncssh

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
# ... and few channels: all strangers together hold at most 128 of the 1,024 channels.
MAX_STRANGER_CHANNELS_PER_CONNECTION = 4
MAX_STRANGER_CHANNELS = 128
# A node that may not send large frames (a stranger, or a node not granted push) gets a small
# window: what its channels make the server buffer unread is at most 64 KiB each.
SMALL_WINDOW = 64 * 1024
# An authenticated connection with no channel open this long is closed (the dialer's pool
# closes its own after 5 idle minutes).
IDLE_CONNECTION_S = 600.0

# What a channel may make the server read, and how long it may keep it waiting. A channel must
# ask for its command (the `polykey` subsystem or stock git) and, on a `polykey` channel, send
# its hello, a frame of at most HELLO_FRAME bytes, within HELLO_TIMEOUT_S of opening (or the
# request timeout, if shorter). After the hello, every request must start within the request
# timeout (`pk agent start --peer-idle`, IDLE_S by default) of the previous reply, and its body
# must keep coming: no silence as long as the request timeout, and all of it within the request
# timeout plus its size at FRAME_MIN_RATE. A request is at most SMALL_FRAME bytes, but for the
# methods that carry objects (LARGE_METHODS) from a node that may push to some vault: those
# may be up to MAX_FRAME, and all such frames held at once, on every channel together, are at
# most BUFFER_BUDGET bytes (a frame past it waits its turn, up to the request timeout). The
# size in a frame's header is checked before any of its body is read.
HELLO_FRAME = 4 * 1024
HELLO_TIMEOUT_S = 10.0
IDLE_S = 60.0
SMALL_FRAME = 64 * 1024
LARGE_METHODS = frozenset({"vaults.receive", "vaults.adopt"})  # they carry objects (sync/)
BUFFER_BUDGET = 256 * 1024 * 1024
FRAME_MIN_RATE = 32 * 1024  # bytes per second
READ_CHUNK = 256 * 1024


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
        self.stranger_channels = 0  # channels opened by NodeIds not in ``known``
        self.handshakes: dict[str, int] = {}  # connections still authenticating, by address
        self.per_peer: dict[NodeId, int] = {}
        # The NodeIds this node deals with (granted a vault, or in its node graph), kept fresh by
        # the agent; None: every NodeId counts as known.
        self.known: frozenset[bytes] | None = None
        # The NodeIds granted `push` on some vault, kept fresh by the agent: only they may send
        # the large frames of LARGE_METHODS. None: every known NodeId may.
        self.pushers: frozenset[bytes] | None = None
        self.buffered = 0  # bytes of large frames held now (at most BUFFER_BUDGET)
        self._waiting: list[asyncio.Future[None]] = []

    def is_stranger(self, node_id: NodeId) -> bool:
        return self.known is not None and bytes(node_id) not in self.known

    def may_send_large(self, node_id: NodeId) -> bool:
        """Whether a request from ``node_id`` may be larger than SMALL_FRAME."""
        if self.is_stranger(node_id):
            return False
        return self.pushers is None or bytes(node_id) in self.pushers

    async def reserve(self, size: int, timeout: float) -> bool:
        """Count ``size`` bytes against BUFFER_BUDGET, waiting up to ``timeout`` seconds for
        room; False if there was none."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self.buffered + size > BUFFER_BUDGET:
            left = deadline - loop.time()
            if left <= 0 or size > BUFFER_BUDGET:
                return False
            room: asyncio.Future[None] = loop.create_future()
            self._waiting.append(room)
            try:
                await asyncio.wait_for(room, left)
            except TimeoutError:
                return False
            finally:
                with contextlib.suppress(ValueError):
                    self._waiting.remove(room)
        self.buffered += size
        return True

    def release(self, size: int) -> None:
        """Give back what ``reserve`` counted (the frame and what was decoded from it are gone
        by then); whoever waits for room looks again."""
        self.buffered -= size
        waiting, self._waiting = self._waiting, []
        for room in waiting:
            if not room.done():
                room.set_result(None)
        if self.buffered == 0:
            _give_memory_back()


@functools.cache
def _malloc_trim() -> Any:
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        return ctypes.CDLL(None).malloc_trim
    return None


def _give_memory_back() -> None:
    """Hand the heap's free pages back to the system (glibc: malloc_trim), so that the memory
    of large frames is not kept once they are gone; elsewhere, nothing."""
    trim = _malloc_trim()
    if trim is not None:
        with contextlib.suppress(Exception):
            trim(0)


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
    ) -> None:
        self.limits = limits
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
        relayed = self.relay.connect(self.bound, dest_host, dest_port)  # or ChannelOpenError
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
            _less(self.limits.handshakes, self.address)
            self.limits.per_peer[peer] = self.limits.per_peer.get(peer, 0) + 1
            if self.limits.is_stranger(peer):
                self.stranger = True
                self.limits.strangers += 1
            self._arm()
        self.conn.set_extra_info(peer_node_id=peer)


async def _read_frame(reader: Any, limit: int = MAX_FRAME) -> dict[str, Any]:
    """One frame's message, at most ``limit`` bytes (checked before its body is read):
    frames.FrameError (a ValueError) past it or for a body that is no message."""
    size = frames.size(await reader.readexactly(frames.HEADER_SIZE), limit)
    return _parse(await _read_body(reader, size))


async def _read_body(reader: Any, size: int, gap: float | None = None) -> bytearray:
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


def _parse(body: str | bytes | bytearray) -> dict[str, Any]:
    """A frame's JSON object (codec.decode): codec.BadMessage, a ValueError, if it is none."""
    return codec.decode(body)


def _frame(doc: dict[str, Any]) -> bytes:
    """``doc`` as one frame, bytes in it as {"$b64": ...} (codec.encode)."""
    return frames.frame(codec.encode(doc))


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
    idle: float = IDLE_S,
    relay: Any = None,
) -> asyncssh.SSHAcceptor:
    """Accept peers; every RPC on a `polykey` channel goes to ``handler(peer, method, params)``,
    and stock git's upload-pack and receive-pack to ``git(peer, service, path, process)``.
    ``idle``: the request timeout of `polykey` channels (see HELLO_FRAME)."""
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
    handler: Handler, git: GitHandler | None, limits: PeerLimits, idle: float, relay: Any
) -> Callable[[], _Server]:
    async def process(proc: asyncssh.SSHServerProcess[bytes]) -> None:
        peer = proc.get_extra_info("peer_node_id")
        service = (proc.command or "").partition(" ")[0]
        if peer is not None and git is not None and service in GIT_SERVICES:
            await _git_channel(proc, peer, service, git)
        elif proc.subsystem == SUBSYSTEM and peer is not None:
            opened = getattr(proc, "opened", None) or asyncio.get_running_loop().time()
            await _rpc_channel(proc, peer, handler, limits, idle, opened)
        else:
            proc.stderr.write(b"only the polykey subsystem is served\n")
            proc.exit(1)

    return lambda: _Server(limits, process, idle, relay)


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


class _Closed(Exception):
    """The channel is to be closed; the message says why (one log line)."""


class _Hold:
    """A large frame's share of the budget (0: a small frame, not counted), given back once."""

    def __init__(self, limits: PeerLimits, size: int) -> None:
        self.limits, self.size = limits, size

    def release(self) -> None:
        size, self.size = self.size, 0
        if size:
            self.limits.release(size)


async def _rpc_channel(
    proc: asyncssh.SSHServerProcess[bytes],
    peer: NodeId,
    handler: Handler,
    limits: PeerLimits,
    idle: float,
    opened: float,
) -> None:
    """One `polykey` channel: the version hello first, then requests answered in order. What
    each frame may be, and how long it may take, is decided before its body is read (see
    HELLO_FRAME); a frame over SMALL_FRAME counts against the shared BUFFER_BUDGET until its
    request is answered."""
    loop = asyncio.get_running_loop()
    hello_by = opened + min(HELLO_TIMEOUT_S, idle)
    greeted = False
    try:
        while True:
            if greeted:
                limit = MAX_FRAME if limits.may_send_large(peer) else SMALL_FRAME
                wait = idle
            else:
                limit, wait = HELLO_FRAME, hello_by - loop.time()
            try:
                header = await asyncio.wait_for(proc.stdin.readexactly(4), max(wait, 0))
            except TimeoutError:
                raise _Closed("silent" if greeted else "no hello in time") from None
            size = int.from_bytes(header, "big")
            if size > limit:
                raise _Closed(f"a frame of {size} bytes (at most {limit} here)")
            hold = _Hold(limits, size if size > SMALL_FRAME else 0)
            if hold.size and not await limits.reserve(hold.size, idle):
                raise _Closed("too many large frames held at once")
            try:
                answered = await _one_request(
                    proc, peer, handler, size, greeted, hello_by, idle, hold.release
                )
            finally:
                hold.release()
            if not answered:
                break
            greeted = True
    except (asyncio.IncompleteReadError, ConnectionError, asyncssh.Error):
        pass
    except _Closed as exc:
        log.warning("closed a channel from %s: %s", encode_node_id(peer), exc)
    except ValueError as exc:  # UnicodeDecodeError and bad base64 are ValueErrors too
        reason = str(exc)[:100].replace("\n", " ")
        log.warning("closed a channel from %s: %s", encode_node_id(peer), reason)
    except Exception as exc:  # a bug must cost this channel only, and say so in one line
        log.error(
            "closed a channel from %s: internal error %s", encode_node_id(peer), type(exc).__name__
        )
    finally:
        with contextlib.suppress(Exception):
            proc.exit(0)


async def _one_request(
    proc: asyncssh.SSHServerProcess[bytes],
    peer: NodeId,
    handler: Handler,
    size: int,
    greeted: bool,
    hello_by: float,
    idle: float,
    done: Callable[[], None],
) -> bool:
    """Read the body of a frame of ``size`` bytes, answer it, wait for the answer to be taken;
    False if the channel is done. Nothing of the request is kept once it is handled, and then
    ``done()`` is called (before the reply is sent)."""
    loop = asyncio.get_running_loop()
    within = idle + size / FRAME_MIN_RATE if greeted else hello_by - loop.time()
    try:
        body = await asyncio.wait_for(_read_body(proc.stdin, size, idle), max(within, 0))
    except TimeoutError:
        raise _Closed("a request too slow to arrive") from None
    text = codec.text_of(body)  # UTF-8; then the raw bytes go at once
    del body
    request = _parse(text)
    del text
    request_id, method, wired = codec.check_request(request)  # codec.BadMessage: closed
    del request
    params = codec.from_wire(wired)
    del wired
    if size > SMALL_FRAME and method not in LARGE_METHODS:
        raise _Closed(f"a frame of {size} bytes for a method that carries no objects")
    # the protocol version is exchanged first, or nothing happens
    if not greeted and (method != "peer.hello" or params.get("version") != PROTOCOL_VERSION):
        raise _Closed("no hello")
    try:
        if method == OBSERVED:  # only the transport knows where the peer came from
            result = {"address": _observed(proc)}
        else:
            result = await handler(peer, method, params)
        reply = {"jsonrpc": "2.0", "id": request_id, "result": result}
    except PolykeyError as exc:
        reply = {
            "jsonrpc": "2.0",
            "id": request_id,
            "error": {
                "code": -32000,
                "message": exc.message,
                "data": {"exit_code": exc.exit_code, "hint": exc.user_hint},
            },
        }
    del params
    done()
    proc.stdout.write(_frame(reply))
    del reply
    try:  # the next request waits until this reply is taken: no replies pile up
        await asyncio.wait_for(proc.stdout.drain(), REPLY_TIMEOUT_S)
    except (TimeoutError, ConnectionError, asyncssh.Error):
        log.warning("closed a channel from %s: replies not read", encode_node_id(peer))
        return False
    return True


OBSERVED = "peer.observed"  # "I see you as HOST:PORT" (docs/spec/discovery.md section 10)


def _observed(proc: asyncssh.SSHServerProcess[bytes]) -> str:
    peername = proc.get_extra_info("peername")
    if not peername:
        return ""
    host, port = str(peername[0]), int(peername[1])
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


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
        frame = _frame({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
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
