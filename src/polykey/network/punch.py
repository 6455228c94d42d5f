"""Hole punching: two nodes behind NAT connect directly (docs/spec/discovery.md section 12).

A, wanting B, asks a node S both are connected to (B's relay: B keeps a connection to it) with
a request signed by A's key: A's NodeId, B's, A's public address (the host S sees it at, from
``peer.observed``, and the port A's punching socket is bound to), a nonce and a time.
S (``punch.ask``) forwards it to B over B's registration, adding the host it sees B at;
B (``punch.offer``) checks the signature, the time and the nonce, binds a socket and answers
with its own public address. Then both connect to each other's public address from the port
they named, at once, a few times: where each NAT keeps a socket's port and maps it the same
for every destination (Linux masquerade does, when the port is free), the SYNs cross and the
NATs let each other's in: a TCP simultaneous open. The socket then carries SSH, A the client
and B's host key pinned as always, and B serves it as the peer port serves what it accepts.
Where a NAT picks a new port per destination (symmetric), the SYNs miss and the caller falls
back to the relay.

Nothing here authenticates a node: the SSH pin does. The signature lets B refuse to send
packets for a request A never made (S cannot forge one, only fail to deliver it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from polykey.crypto.signing import verify
from polykey.errors import InvalidInput, InvalidNodeId
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import Address, parse_address
from polykey.network.ssh import OBSERVED, PeerClient, PeerError, PeerUnreachable, node_id_of
from polykey.network.sshlib import asyncssh

if TYPE_CHECKING:
    from polykey.network.relay import Relay, RelaySpec

log = logging.getLogger("polykey.network")
T = TypeVar("T")

ASK = "punch.ask"  # A -> S
OFFER = "punch.offer"  # S -> B
METHODS = frozenset({ASK, OFFER})
CONTEXT = b"polykey-punch-v1\n"  # signed before the request's canonical JSON
VERSION = 1
NONCE_BYTES = 16
MAX_SKEW_S = 120  # a request's time may be this far from B's clock, either way
TRIES = 3  # connection attempts on each side
TRY_S = 1.5  # each: SYNs sent at 0 and 1 s (the kernel's first retransmission)
AGAIN_S = 0.05  # after a refusal (an RST), the next attempt
FORWARD_S = 10.0  # S waits this long for B's answer
RETRY_AFTER_S = 300.0  # a node that could not be punched to is not tried again for this long
MAX_AT_ONCE = 8  # punches a node runs at once for others
NONCES_KEPT = 4096


class PunchRefused(PeerError):
    """A hole-punching request was refused."""

    hint = "The connection goes through the relay instead."


@dataclass(frozen=True)
class PunchRequest:
    """What A signs: who asks, for whom, where A's punching socket is seen, once, when."""

    source: NodeId
    target: NodeId
    address: Address
    nonce: bytes
    time: int  # seconds since the epoch

    def doc(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "from": encode_node_id(self.source),
            "to": encode_node_id(self.target),
            "address": str(self.address),
            "nonce": self.nonce.hex(),
            "time": self.time,
        }

    def signable(self) -> bytes:
        return signable(self.doc())


def signable(doc: dict[str, Any]) -> bytes:
    """The bytes signed: CONTEXT, then the request as JSON with sorted keys and no spaces."""
    return CONTEXT + json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign(key: asyncssh.SSHKey, request: PunchRequest) -> bytes:
    """A's Ed25519 signature of ``request`` (the raw 64 bytes of the SSH signature)."""
    return bytes(key.sign(request.signable(), b"ssh-ed25519"))[-64:]


def read_request(doc: Any, signature_hex: Any) -> tuple[PunchRequest, bytes]:
    """A request as it came, its fields checked (not yet its signature); PunchRefused."""
    try:
        if not isinstance(doc, dict) or doc.get("v") != VERSION or len(doc) != 6:
            raise ValueError("not a version 1 request")
        nonce = bytes.fromhex(str(doc["nonce"]))
        stamp = doc["time"]
        if len(nonce) != NONCE_BYTES or not isinstance(stamp, int) or isinstance(stamp, bool):
            raise ValueError("a bad nonce or time")
        request = PunchRequest(
            decode_node_id(str(doc["from"])),
            decode_node_id(str(doc["to"])),
            parse_address(str(doc["address"])),
            nonce,
            stamp,
        )
        signature = bytes.fromhex(str(signature_hex))
    except (ValueError, KeyError, InvalidInput, InvalidNodeId) as exc:
        raise PunchRefused(f"a malformed request ({str(exc)[:80]})") from None
    if request.doc() != doc:
        raise PunchRefused("a request not in its one written form")
    return request, signature


def check_request(
    request: PunchRequest, signature: bytes, me: NodeId, now: float, seen: set[bytes]
) -> None:
    """B's checks, in order: addressed to B, signed by its sender, within MAX_SKEW_S of
    ``now``, its nonce not seen before (then kept in ``seen``); PunchRefused otherwise."""
    if request.target != me:
        raise PunchRefused("the request is for another node")
    if not verify(bytes(request.source), request.signable(), signature):
        raise PunchRefused("the request's signature does not verify")
    if abs(now - request.time) > MAX_SKEW_S:
        raise PunchRefused("the request is too old, or from the future")
    if request.nonce in seen:
        raise PunchRefused("the request was seen before")
    if len(seen) >= NONCES_KEPT:
        seen.clear()  # the time check still bounds a replay to MAX_SKEW_S
    seen.add(request.nonce)


# --- sockets -----------------------------------------------------------------------------


def bound_socket(host: str, port: int = 0) -> socket.socket:
    """A TCP socket bound to ``host:port`` (a fresh port for 0), the port reusable at once by
    the next attempt; non-blocking, for asyncio."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        with contextlib.suppress(AttributeError, OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.setblocking(False)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


async def simultaneous_open(
    first: socket.socket, there: Address, *, listen: bool = False, total: float = TRIES * TRY_S
) -> socket.socket | None:
    """A connection between ``first``'s port and ``there``, or None after ``total`` seconds.
    Connect from that port, again and again (a new socket each time: TRY_S each, or at once
    after a refusal); with ``listen`` (both sides do), accept from ``there`` on the same port
    too, so that the other's SYN finds a socket whether or not an attempt is under way here
    (a host not behind NAT would answer it with a reset). Whichever way it comes, it is the
    one TCP connection between the two ports: a host holds one socket per address pair."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + total
    if not listen:
        return await _connect(first, there, deadline)
    host, port = first.getsockname()[:2]
    try:
        listener = bound_socket(host, port)
        listener.listen(4)
    except OSError:
        return await _connect(first, there, deadline)
    tasks = [
        asyncio.create_task(_connect(first, there, deadline)),
        asyncio.create_task(_accept(listener, there)),
    ]
    try:
        done, _ = await asyncio.wait(
            tasks, timeout=max(0.0, deadline - loop.time()), return_when=asyncio.FIRST_COMPLETED
        )
    finally:
        for task in tasks:
            task.cancel()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        listener.close()
    sockets = [r for r in results if isinstance(r, socket.socket)]
    for extra in sockets[1:]:
        extra.close()
    return sockets[0] if done and sockets else None


async def _connect(
    sock: socket.socket | None, there: Address, deadline: float
) -> socket.socket | None:
    loop = asyncio.get_running_loop()
    assert sock is not None
    host, port = sock.getsockname()[:2]
    while True:
        left = deadline - loop.time()
        if left <= 0:
            if sock is not None:
                sock.close()
            return None
        try:
            if sock is None:
                sock = bound_socket(host, port)
            await asyncio.wait_for(
                loop.sock_connect(sock, (there.host, there.port)), min(TRY_S, left)
            )
            return sock
        except (OSError, TimeoutError):
            if sock is not None:
                sock.close()
            sock = None
        except BaseException:
            if sock is not None:
                sock.close()
            raise
        await asyncio.sleep(AGAIN_S)


async def _accept(listener: socket.socket, there: Address) -> socket.socket:
    """The first connection accepted from ``there`` (others are closed at once)."""
    loop = asyncio.get_running_loop()
    listener.setblocking(False)
    while True:
        conn, peer = await loop.sock_accept(listener)
        if (str(peer[0]), int(peer[1])) == (there.host, there.port):
            conn.setblocking(False)
            return conn
        conn.close()


def _wild(host: str) -> str:
    return "0.0.0.0" if host in ("", "0.0.0.0", "::") else host  # noqa: S104 (bound, not served)


# --- A: the dialling side ------------------------------------------------------------------


async def punch(
    key: asyncssh.SSHKey,
    target: NodeId,
    relay: RelaySpec,
    via: asyncssh.SSHClientConnection,
    host: str = "",
) -> asyncssh.SSHClientConnection:
    """An SSH connection to ``target`` on a punched socket, signalled through ``relay`` (on
    ``via``, this node's connection to it); PeerUnreachable or PeerError if none was made."""
    me = node_id_of(key)
    assert me is not None
    client = await PeerClient.over(via, relay.node_id)
    sock: socket.socket | None = None
    try:
        seen = parse_address(str((await client.call(OBSERVED, {})).get("address", "")))
        sock = bound_socket(_wild(host))
        request = PunchRequest(
            me, target, Address(seen.host, sock.getsockname()[1]), os.urandom(16), int(time.time())
        )
        params = {"request": request.doc(), "signature": sign(key, request).hex()}
        reply = await client.call(ASK, params)
        there = parse_address(str(reply.get("address", "")))
    except (InvalidInput, OSError) as exc:
        if sock is not None:
            sock.close()
        raise PeerUnreachable(f"{encode_node_id(target)}: no punch ({exc})") from None
    except BaseException:
        if sock is not None:
            sock.close()
        raise
    finally:
        await client.channel_closed()
    connected = await simultaneous_open(sock, there, listen=True)
    if connected is None:
        raise PeerUnreachable(f"{encode_node_id(target)}: the punch to {there} did not connect")
    peer = await PeerClient.connect(key, target, there.host, there.port, sock=connected)
    peer.close_channel()
    log.info("punched a direct connection to %s at %s", encode_node_id(target), there)
    return peer.conn


class Punched:
    """This node's punched connections, one per node, kept and reused (like the pool's); the
    nodes that could not be punched to, not tried again for RETRY_AFTER_S."""

    def __init__(self) -> None:
        self._conns: dict[bytes, tuple[asyncssh.SSHClientConnection, str]] = {}
        self._failed: dict[bytes, float] = {}
        self._locks: dict[bytes, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"Punched({len(self._conns)} open)"

    async def ensure(
        self,
        key: asyncssh.SSHKey,
        target: NodeId,
        relay: RelaySpec,
        via: Callable[[], Awaitable[asyncssh.SSHClientConnection]],
    ) -> bool:
        """Whether a punched connection to ``target`` is open (one is tried if none is and
        the last try is long enough ago)."""
        slot = bytes(target)
        async with self._locks.setdefault(slot, asyncio.Lock()):
            held = self._conns.get(slot)
            if held is not None and not held[0].is_closed():
                return True
            if time.monotonic() < self._failed.get(slot, 0.0):
                return False
            try:
                conn = await punch(key, target, relay, await via())
            except (PeerUnreachable, PeerError, OSError, asyncssh.Error) as exc:
                log.info("no punched path to %s: %s", encode_node_id(target), exc)
                self._failed[slot] = time.monotonic() + RETRY_AFTER_S
                return False
            peer = conn.get_extra_info("peername")
            self._conns[slot] = (conn, f"{peer[0]}:{peer[1]}" if peer else "")
            return True

    def holds(self, target: NodeId) -> bool:
        held = self._conns.get(bytes(target))
        return held is not None and not held[0].is_closed()

    async def run(self, target: NodeId, call: Callable[[PeerClient], Awaitable[T]]) -> T:
        """``call`` on a new channel of the punched connection to ``target``."""
        held = self._conns.get(bytes(target))
        if held is None or held[0].is_closed():
            raise PeerUnreachable(f"{encode_node_id(target)}: the punched connection closed")
        client = await PeerClient.over(held[0], target)
        try:
            return await call(client)
        finally:
            await client.channel_closed()

    def connections(self) -> list[dict[str, Any]]:
        return [
            {"node_id": encode_node_id(NodeId(t)), "address": where, "idle_s": 0, "punched": True}
            for t, (conn, where) in self._conns.items()
            if not conn.is_closed()
        ]

    async def close(self) -> None:
        conns = [c for c, _ in self._conns.values()]
        self._conns.clear()
        for conn in conns:
            conn.close()


# --- S and B: the agent's side -------------------------------------------------------------


class Puncher:
    """An agent's part: on a relay, forwarding requests to its registered nodes (``ask``);
    on any node serving peers, answering one and punching back (``offer``), the socket then
    served by ``accept`` as the peer port serves what it accepts.

    It holds the punches under way (a task each, with its bound socket and, while the punch
    lasts, a listener on the same port) and the connections it punched and served (with the
    host key it was made with). ``close`` ends all of them: the agent closes its puncher when
    it stops and when it renews its key (a new one then serves with the new key)."""

    def __init__(
        self,
        key: asyncssh.SSHKey,
        accept: Callable[[socket.socket], Awaitable[Any]],
        *,
        host: str = "",
        relay: Relay | None = None,
    ) -> None:
        self.key = key
        me = node_id_of(key)
        assert me is not None
        self.me = me
        self.accept = accept
        self.host = _wild(host)
        self.relay = relay
        self.seen: set[bytes] = set()
        self.running = 0
        self.forwarded = 0  # requests this relay forwarded
        self.punched = 0  # connections punched to this node and served
        self.closed = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._sockets: set[socket.socket] = set()  # bound for the punches under way
        self._served: set[Any] = set()  # asyncssh.SSHServerConnection, punched and served

    def __repr__(self) -> str:
        return f"Puncher(forwarded {self.forwarded}, punched {self.punched})"

    async def handle(self, peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
        if method == ASK:
            return await self.forward(peer, params)
        return await self.offer(params)

    async def forward(self, caller: NodeId, params: dict[str, Any]) -> dict[str, Any]:
        """S: hand A's request to B over B's registration, with the host S sees B at."""
        from polykey.network.relay import FORWARD_PORT

        request, _ = read_request(params.get("request"), params.get("signature"))
        if request.source != caller:
            raise PunchRefused("a request is forwarded only for the node that signed it")
        registration = (
            None if self.relay is None else self.relay.registered.get(bytes(request.target))
        )
        if registration is None or registration.conn.is_closed():
            raise PunchRefused(f"{encode_node_id(request.target)} is not registered here")
        peername = registration.conn.get_extra_info("peername")
        offer = {**params, "seen": str(peername[0]) if peername else ""}
        target = request.target
        try:
            async with asyncio.timeout(FORWARD_S):
                client = await PeerClient.connect(
                    self.key, target, encode_node_id(target), FORWARD_PORT, tunnel=registration.conn
                )
                try:
                    reply = await client.call(OFFER, offer)
                finally:
                    client.close()
        except TimeoutError:
            raise PunchRefused(f"{encode_node_id(target)} did not answer in time") from None
        self.forwarded += 1
        return {"address": str(reply.get("address", ""))[:100]}

    async def offer(self, params: dict[str, Any]) -> dict[str, Any]:
        """B: check A's request, bind a socket, answer with where it is seen, punch back."""
        request, signature = read_request(params.get("request"), params.get("signature"))
        check_request(request, signature, self.me, time.time(), self.seen)
        try:
            seen_host = parse_address(f"{params.get('seen')}:1").host
        except InvalidInput:
            raise PunchRefused("the relay did not say where it sees this node") from None
        if self.closed:
            raise PunchRefused("this node is renewing its key or stopping")
        if self.running >= MAX_AT_ONCE:
            raise PunchRefused("too many punches at once")
        sock = bound_socket(self.host)
        port = sock.getsockname()[1]
        self.running += 1
        self._sockets.add(sock)
        task = asyncio.create_task(self._punch_back(sock, request.address))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        where = f"[{seen_host}]:{port}" if ":" in seen_host else f"{seen_host}:{port}"
        return {"address": where}

    async def _punch_back(self, sock: socket.socket, there: Address) -> None:
        connected: socket.socket | None = None
        try:
            connected = await simultaneous_open(sock, there, listen=True)
            if connected is None:
                log.info("punch to %s did not connect", there)
                return
            try:
                conn = await self.accept(connected)
            except (OSError, asyncssh.Error, TimeoutError) as exc:
                log.info("a punched connection from %s failed: %s", there, exc)
                connected.close()
                return
            self._served = {c for c in self._served if not c.is_closed()}
            self._served.add(conn)
            self.punched += 1
            log.info("serving a punched connection from %s", there)
        except BaseException:
            if connected is not None:
                connected.close()
            raise
        finally:
            self.running -= 1
            self._sockets.discard(sock)
            if connected is not sock:  # not handed over: closed (a no-op if it was)
                sock.close()

    def status(self) -> dict[str, int]:
        return {
            "forwarded": self.forwarded,
            "punched": self.punched,
            "running": self.running,
            "open": sum(1 for c in self._served if not c.is_closed()),
        }

    async def close(self) -> None:
        """End the punches under way (their sockets and listeners closed) and close the
        connections punched to this node; new requests are refused from now on."""
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        for sock in list(self._sockets):  # a task cancelled before it ever ran
            sock.close()
        self._sockets.clear()
        served, self._served = list(self._served), set()
        for conn in served:
            conn.close()
        for conn in served:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)
