"""Relaying connections to nodes behind NAT (docs/spec/discovery.md section 9).

A relay is an agent started with ``--relay``. A node behind NAT that was told to use it keeps an
SSH connection to it with a remote forward whose listening host is its own NodeId (and port
FORWARD_PORT): that is its registration, and a node may register only under the NodeId it
authenticated with. Another node reaches it as through an SSH jump host: a ``direct-tcpip``
channel to the relay naming the NodeId, inside which it speaks SSH to the node itself, that
node's key pinned. The relay pipes bytes between the two channels and nothing else: it learns who
talks to whom and how much, never what, and it can fail to deliver but never impersonate.

The relay connects only to registered NodeIds (never to a host and port: it is no open proxy),
and is bounded: registrations, relayed connections in all, per registered node, per client
NodeId and per client address (NodeIds cost nothing to make, addresses do), and bytes per
second per NodeId (both directions together; a peer over its rate is paused, and SSH's flow
control holds the sender back). Each forward names the address the relay sees its client at, so
that the node limits the handshakes of each client rather than of the relay as a whole.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

from asyncssh.forward import SSHForwarder

from polykey.errors import InvalidInput, InvalidNodeId
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import Address, parse_address
from polykey.network.ssh import PeerClient, PeerUnreachable
from polykey.network.sshlib import asyncssh

if TYPE_CHECKING:
    from polykey.network.ssh import PeerLimits

log = logging.getLogger("polykey.network")
T = TypeVar("T")

FORWARD_PORT = 1314  # the port of every registration; it names nothing on either host
MAX_REGISTERED = 256  # nodes registered with one relay
MAX_RELAYED = 512  # relayed connections open at once, in all
MAX_RELAYED_PER_NODE = 32  # ... to one registered node
MAX_RELAYED_PER_CLIENT = 16  # ... from one client NodeId
MAX_RELAYED_PER_ADDRESS = 32  # ... from one client address, all its NodeIds together
MAX_RELAYED_PER_ADDRESS_TO_NODE = 16  # ... of those, to one registered node
RATE = 16 * 1024 * 1024  # bytes per second per NodeId, both ways together (--relay-rate)
BURST_S = 0.25  # what a NodeId may send at once: this many seconds of its rate
KEEPALIVE_S = 30.0  # the registration's keepalive (3 unanswered: registered again)
RETRY_S = (0.5, 1.0, 2.0, 5.0, 10.0, 30.0)  # a registration lost is made again after these


class RelayUnusable(InvalidInput):
    """That is not a relay: NODEID@HOST:PORT is needed."""

    hint = "For example vab1...@203.0.113.7:1314 (the relay's NodeId and its peer port)."


@dataclass(frozen=True)
class RelaySpec:
    """A relay: its NodeId (pinned when it is dialled) and where it listens."""

    node_id: NodeId
    address: Address

    def __str__(self) -> str:
        return f"{encode_node_id(self.node_id)}@{self.address}"


def parse_relay(text: str) -> RelaySpec:
    """``NODEID@HOST:PORT``; RelayUnusable (exit 2) otherwise."""
    node_text, sep, where = text.strip().partition("@")
    if not sep:
        raise RelayUnusable(f"{text[:80]!r} names no address")
    try:
        return RelaySpec(decode_node_id(node_text), parse_address(where))
    except (InvalidNodeId, InvalidInput):
        raise RelayUnusable(f"{text[:120]!r}") from None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# --- the relay ---------------------------------------------------------------------------


class _Meter:
    """A token bucket: ``rate`` bytes per second, BURST_S of it at once; ``take`` says how
    long the sender should pause for what it just sent."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self.tokens = rate * BURST_S
        self.at = time.monotonic()
        self.moved = 0

    def take(self, count: int) -> float:
        now = time.monotonic()
        self.tokens = min(self.rate * BURST_S, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= count
        self.moved += count
        return -self.tokens / self.rate if self.tokens < 0 else 0.0


class _Pipe(SSHForwarder):
    """One side of a relayed connection: what it receives goes to the other side, counted
    against both NodeIds' meters. Reading pauses while the other side cannot take more (SSH
    flow control) or while a meter is over its rate; it resumes when neither holds it."""

    def __init__(
        self,
        meters: tuple[_Meter, ...],
        release: Callable[[], None],
        peer: SSHForwarder | None = None,
    ) -> None:
        super().__init__(peer)
        self.meters = meters
        self._release: Callable[[], None] | None = release
        self._held: set[str] = set()

    def _hold(self, why: str) -> None:
        if not self._held and self._transport is not None:
            super().pause_reading()
        self._held.add(why)

    def _free(self, why: str) -> None:
        if why in self._held:
            self._held.discard(why)
            if not self._held and self._transport is not None:
                super().resume_reading()

    def pause_reading(self) -> None:
        self._hold("peer")

    def resume_reading(self) -> None:
        self._free("peer")

    def data_received(self, data: bytes, datatype: int | None = None) -> None:
        super().data_received(data, datatype)
        wait = max(m.take(len(data)) for m in self.meters)
        if wait > 0 and "rate" not in self._held:
            self._hold("rate")
            asyncio.get_running_loop().call_later(wait, self._free, "rate")

    def close(self) -> None:
        release, self._release = self._release, None
        super().close()
        if release is not None:
            release()


class _Registration(asyncssh.SSHListener):
    """A node's registration: the remote forward it asked for. Closed when its connection
    closes, or when the node registers again on a newer connection."""

    def __init__(self, relay: Relay, node_id: NodeId, conn: asyncssh.SSHServerConnection):
        super().__init__()
        self.relay, self.node_id, self.conn = relay, node_id, conn
        self.since = _now()

    def get_port(self) -> int:
        return FORWARD_PORT

    def close(self) -> None:
        self.relay._unregister(self)

    async def wait_closed(self) -> None:
        return None


class Relay:
    """The relay an agent runs with ``--relay``: its registrations and its relayed
    connections. Called by the peer port's SSH server (network/ssh.py) on its event loop."""

    def __init__(
        self,
        limits: PeerLimits | None = None,
        *,
        rate: int = RATE,
        max_registered: int = MAX_REGISTERED,
        max_relayed: int = MAX_RELAYED,
        per_node: int = MAX_RELAYED_PER_NODE,
        per_client: int = MAX_RELAYED_PER_CLIENT,
        per_address: int = MAX_RELAYED_PER_ADDRESS,
        per_address_to_node: int = MAX_RELAYED_PER_ADDRESS_TO_NODE,
    ) -> None:
        self.limits = limits
        self.rate = rate
        self.max_registered, self.max_relayed = max_registered, max_relayed
        self.per_node, self.per_client = per_node, per_client
        self.per_address, self.per_address_to_node = per_address, per_address_to_node
        self.registered: dict[bytes, _Registration] = {}
        self.relayed = 0
        self.to_node: dict[bytes, int] = {}
        self.from_client: dict[bytes, int] = {}
        self.from_address: dict[str, int] = {}
        self.from_address_to_node: dict[tuple[str, bytes], int] = {}
        self.meters: dict[bytes, _Meter] = {}
        self.refused = 0
        self.carried = 0  # relayed connections since the relay started
        self.punch: Any = None  # network.punch.Puncher: signalling for hole punching

    def __repr__(self) -> str:
        return f"Relay({len(self.registered)} registered, {self.relayed} relayed)"

    def is_registered(self, node_id: NodeId) -> bool:
        reg = self.registered.get(bytes(node_id))
        return reg is not None and not reg.conn.is_closed()

    def register(
        self, conn: asyncssh.SSHServerConnection, node_id: NodeId, host: str, port: int
    ) -> _Registration | bool:
        """A remote forward asked for on ``conn`` by ``node_id``: its registration, or False
        (under another name, at another port, or too many registered)."""
        who = encode_node_id(node_id)
        if host != who or port != FORWARD_PORT:
            log.warning("relay: refused %s a forward at %s:%d", who, host[:60], port)
            return False
        key = bytes(node_id)
        if key not in self.registered and len(self.registered) >= self.max_registered:
            log.warning("relay: refused to register %s: %d registered", who, self.max_registered)
            return False
        registration = _Registration(self, node_id, conn)
        self.registered[key] = registration  # a newer connection of the node replaces the old
        log.info("relay: %s registered", who)
        return registration

    def _unregister(self, registration: _Registration) -> None:
        key = bytes(registration.node_id)
        if self.registered.get(key) is registration:
            del self.registered[key]
            log.info("relay: %s unregistered", encode_node_id(registration.node_id))

    def connect(
        self, client: NodeId, host: str, port: int, source: tuple[str, int] = ("", 0)
    ) -> Awaitable[SSHForwarder]:
        """A client's ``direct-tcpip`` request to reach ``host``: the coroutine that opens the
        other half on the registered node's connection, naming ``source`` (where the relay
        sees the client) as its origin. asyncssh.ChannelOpenError (the client reads it as a
        refusal) when ``host`` is not a registered NodeId or a bound is reached."""
        try:
            target = decode_node_id(host)
        except InvalidNodeId:
            target = None
        if target is None or port != FORWARD_PORT:
            raise self._refuse("a relay connects only to nodes registered with it", 1)
        registration = self.registered.get(bytes(target))
        if registration is None or registration.conn.is_closed():
            raise self._refuse(f"{host} is not registered with this relay", 2)
        t, c, a = bytes(target), bytes(client), source[0][:100]
        if (
            self.relayed >= self.max_relayed
            or self.to_node.get(t, 0) >= self.per_node
            or self.from_client.get(c, 0) >= self.per_client
            or self.from_address.get(a, 0) >= self.per_address
            or self.from_address_to_node.get((a, t), 0) >= self.per_address_to_node
        ):
            raise self._refuse("the relay carries as many connections as it may", 4)
        self.relayed += 1
        self.carried += 1
        self.to_node[t] = self.to_node.get(t, 0) + 1
        self.from_client[c] = self.from_client.get(c, 0) + 1
        self.from_address[a] = self.from_address.get(a, 0) + 1
        self.from_address_to_node[a, t] = self.from_address_to_node.get((a, t), 0) + 1
        meters = (self._meter(t), self._meter(c))
        released = [False]

        def release() -> None:
            if not released[0]:
                released[0] = True
                self.relayed -= 1
                _less(self.to_node, t)
                _less(self.from_client, c)
                _less(self.from_address, a)
                _less(self.from_address_to_node, (a, t))

        async def open_other_half() -> SSHForwarder:
            try:
                _, far = await registration.conn.create_connection(
                    cast(Any, lambda: _Pipe(meters, release)),
                    host,
                    FORWARD_PORT,
                    a,  # the origin: where the client is seen (the node limits by it)
                    max(0, min(int(source[1]), 65535)),
                )
            except (OSError, asyncssh.Error) as exc:
                release()
                raise asyncssh.ChannelOpenError(2, f"the node did not answer ({exc})") from None
            assert isinstance(far, _Pipe)
            return _Pipe(meters, release, far)

        log.info("relay: %s -> %s", encode_node_id(client), host)
        return open_other_half()

    def _refuse(self, why: str, code: int) -> asyncssh.ChannelOpenError:
        self.refused += 1
        log.info("relay: refused a connection: %s", why)
        return asyncssh.ChannelOpenError(code, why)

    def _meter(self, key: bytes) -> _Meter:
        meter = self.meters.get(key)
        if meter is None:
            if len(self.meters) > 4 * self.max_relayed:  # forget the idle ones
                busy = set(self.to_node) | set(self.from_client)
                self.meters = {k: m for k, m in self.meters.items() if k in busy}
            meter = self.meters[key] = _Meter(self.rate)
        return meter

    def status(self) -> dict[str, Any]:
        return {
            "registered": len(self.registered),
            "relayed": self.relayed,
            "carried": self.carried,
            "refused": self.refused,
            **({"punches": self.punch.forwarded} if self.punch is not None else {}),
            "rate": self.rate,
        }


def _less(counts: dict[Any, int], key: Any) -> None:
    left = counts.get(key, 1) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


# --- the node behind NAT: its registration ------------------------------------------------


async def dial_relay(key: asyncssh.SSHKey, relay: RelaySpec) -> asyncssh.SSHClientConnection:
    """An SSH connection to the relay, its NodeId pinned; PeerUnreachable if none."""
    client = await PeerClient.connect(key, relay.node_id, relay.address.host, relay.address.port)
    client.close_channel()  # the hello proved the relay speaks our protocol; the rest is SSH
    return client.conn


ServeRelayed = Callable[[asyncssh.SSHClientConnection, str, int], Awaitable[Any]]


class Registrar:
    """Keeps this node registered with its relay: one SSH connection with the remote forward
    named by this node's NodeId. The relayed connections are served on it by ``serve`` (the
    agent: network/sshserver.py ``serve_relayed``, each counted by its client's address), or
    else handed to the peer port at ``local``. A lost registration is made again, after
    RETRY_S; ``run`` cancelled closes the connection and waits (2 s at most) until it is
    closed, the relay then dropping the registration."""

    def __init__(
        self,
        key: asyncssh.SSHKey,
        me: NodeId,
        relay: RelaySpec,
        local: Address,
        serve: ServeRelayed | None = None,
    ) -> None:
        self.key, self.me, self.relay, self.local = key, me, relay, local
        self.serve = serve
        self.conn: asyncssh.SSHClientConnection | None = None
        self.since = ""
        self.error = ""

    def __repr__(self) -> str:
        return f"Registrar({self.relay})"

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                await self._once()
                failures = 0
                self.error = "the connection to the relay closed"
            except (OSError, asyncssh.Error, PeerUnreachable) as exc:
                self.error = str(exc)[:200] if isinstance(exc, PeerUnreachable) else repr(exc)
                log.info("relay registration failed: %s", self.error)
            self.since = ""
            await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S) - 1)])
            failures += 1

    async def _once(self) -> None:
        conn = await dial_relay(self.key, self.relay)
        conn.set_keepalive(KEEPALIVE_S, 3)  # a relay gone silent is noticed, and NATs see traffic
        self.conn = conn
        try:
            name = encode_node_id(self.me)
            if self.serve is not None:
                await self.serve(conn, name, FORWARD_PORT)
            else:
                await conn.forward_remote_port(name, FORWARD_PORT, self.local.host, self.local.port)
            self.since, self.error = _now(), ""
            log.info("registered with the relay %s", self.relay)
            await conn.wait_closed()
        finally:
            self.conn = None
            conn.close()
            with contextlib.suppress(Exception):  # the relay drops it as it closes
                await asyncio.wait_for(conn.wait_closed(), 2)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"relay": str(self.relay), "registered": bool(self.since)}
        if self.since:
            doc["since"] = self.since
        if self.error and not self.since:
            doc["error"] = self.error
        return doc

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()


# --- the dialling side: through a relay ---------------------------------------------------


class Tunnels:
    """This node's connections to relays and, through them, to the nodes they relay: one of
    each, kept and reused (like the pool's); used on the pool's event loop."""

    def __init__(self) -> None:
        self._relays: dict[bytes, asyncssh.SSHClientConnection] = {}
        self._targets: dict[tuple[bytes, bytes], asyncssh.SSHClientConnection] = {}
        self._dialing: dict[tuple[bytes, bytes], asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"Tunnels({len(self._targets)} open)"

    async def run(
        self,
        key: asyncssh.SSHKey,
        target: NodeId,
        relay: RelaySpec,
        call: Callable[[PeerClient], Awaitable[T]],
    ) -> T:
        """``call`` on a channel to ``target`` through ``relay``; a kept connection that broke
        is dialled again once."""
        slot = (bytes(target), bytes(relay.node_id))
        for attempt in (1, 2):
            async with self._dialing.setdefault(slot, asyncio.Lock()):
                conn = self._targets.get(slot)
                kept = conn is not None and not conn.is_closed()
                if not kept:
                    conn = await self._dial(key, target, relay)
                    self._targets[slot] = conn
            assert conn is not None
            try:
                client = await PeerClient.over(conn, target)
            except PeerUnreachable:
                self._drop(slot)
                if kept and attempt == 1:
                    continue
                raise
            try:
                return await call(client)
            except PeerUnreachable:
                self._drop(slot)
                raise
            finally:
                await client.channel_closed()
        raise PeerUnreachable(encode_node_id(target))

    async def relay_connection(
        self, key: asyncssh.SSHKey, relay: RelaySpec
    ) -> asyncssh.SSHClientConnection:
        """This node's connection to ``relay`` (kept; dialled if there is none)."""
        via = self._relays.get(bytes(relay.node_id))
        if via is None or via.is_closed():
            via = await dial_relay(key, relay)
            self._relays[bytes(relay.node_id)] = via
        return via

    async def _dial(
        self, key: asyncssh.SSHKey, target: NodeId, relay: RelaySpec
    ) -> asyncssh.SSHClientConnection:
        via = await self.relay_connection(key, relay)
        try:
            client = await PeerClient.connect(
                key, target, encode_node_id(target), FORWARD_PORT, tunnel=via
            )
        except PeerUnreachable as exc:
            raise PeerUnreachable(
                f"{encode_node_id(target)} through the relay {relay}: {exc.detail}",
                hint="The node may not be registered with that relay now (its agent stopped, "
                "or it uses another relay).",
            ) from None
        client.close_channel()
        return client.conn

    def _drop(self, slot: tuple[bytes, bytes]) -> None:
        conn = self._targets.pop(slot, None)
        if conn is not None:
            conn.close()

    def connections(self) -> list[dict[str, Any]]:
        return [
            {
                "node_id": encode_node_id(NodeId(t)),
                "relay": encode_node_id(NodeId(r)),
                "address": f"via relay {encode_node_id(NodeId(r))}",
                "idle_s": 0,
            }
            for (t, r), conn in self._targets.items()
            if not conn.is_closed()
        ]

    async def close(self) -> None:
        conns = [*self._targets.values(), *self._relays.values()]
        self._targets.clear()
        self._relays.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 2)
