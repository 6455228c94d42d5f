"""BEP 44 ``put`` of a signed Pkarr record over KRPC (BEP 5), with our own sequence number.

libtorrent's Python bindings can put a mutable item only by signing it themselves with a
sequence number one past the highest the DHT holds; Pkarr's sequence number is the record's
timestamp. So the put is made here: an iterative Kademlia lookup of the target (SHA-1 of the
public key) with ``get`` queries (alpha 3, k 8), then ``put`` of the record's own ``seq``,
``sig`` and ``v`` (the DNS packet) to the k closest nodes that gave a write token. The
signature is the one pkarr.sign made over ``3:seqi<seq>e1:v<len>:<packet>``: no key is
handed to anyone. Reads go through libtorrent (network/dht.py).

Queries carry ``ro: 1`` (BEP 43); the nodes that take a put still note the socket, so it
stays open while the DHT session runs and answers any query with error 204. In a
``local`` DHT (every seed on loopback) a node answer naming an address off loopback is
dropped: nothing leaves loopback. docs/spec/discovery.md section 7.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import ipaddress
import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from polykey.network import pkarr

ALPHA = 3
K = 8
QUERY_TIMEOUT_S = 1.0
LOOKUP_TIMEOUT_S = 10.0
MAX_QUERIES = 200
MAX_MESSAGE = 1500
Endpoint = tuple[str, int]


class BencodeError(ValueError):
    pass


def bencode(value: Any) -> bytes:
    if isinstance(value, bool):
        raise BencodeError("no booleans in bencoding")
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        keys = sorted((k.encode() if isinstance(k, str) else k) for k in value)
        items = {(k.encode() if isinstance(k, str) else k): v for k, v in value.items()}
        return b"d" + b"".join(bencode(k) + bencode(items[k]) for k in keys) + b"e"
    raise BencodeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """One bencoded value, strictly (no trailing bytes, at most 16 levels deep)."""
    value, end = _decode(data, 0, 0)
    if end != len(data):
        raise BencodeError("trailing bytes")
    return value


def _decode(data: bytes, at: int, depth: int) -> tuple[Any, int]:
    if depth > 16 or at >= len(data):
        raise BencodeError("too deep or truncated")
    lead = data[at : at + 1]
    if lead == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if lead in (b"l", b"d"):
        items: list[Any] = []
        at += 1
        while data[at : at + 1] != b"e":
            item, at = _decode(data, at, depth + 1)
            items.append(item)
        if lead == b"l":
            return items, at + 1
        if len(items) % 2 or not all(isinstance(k, bytes) for k in items[::2]):
            raise BencodeError("a dictionary needs byte-string keys")
        return dict(zip(items[::2], items[1::2], strict=True)), at + 1
    if lead.isdigit():
        colon = data.index(b":", at)
        length = int(data[at:colon])
        if colon + 1 + length > len(data):
            raise BencodeError("truncated string")
        return data[colon + 1 : colon + 1 + length], colon + 1 + length
    raise BencodeError("not bencoding")


def target(public: bytes, salt: bytes = b"") -> bytes:
    """BEP 44's target of a mutable item: SHA-1 of the key (and salt)."""
    return hashlib.sha1(public + salt, usedforsecurity=False).digest()


def compact_nodes(blob: bytes) -> list[tuple[bytes, Endpoint]]:
    """BEP 5's compact node info: 20-byte id, 4-byte IPv4, 2-byte port, repeated."""
    out = []
    for i in range(0, len(blob) - len(blob) % 26, 26):
        node_id, ip, port = blob[i : i + 20], blob[i + 20 : i + 24], blob[i + 24 : i + 26]
        out.append((node_id, (socket.inet_ntoa(ip), int.from_bytes(port, "big"))))
    return out


def is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class PutResult:
    """How a put went: ``stored`` nodes took it, ``newer`` said they hold a newer record (BEP
    44 error 302), ``asked`` nodes answered the lookup."""

    stored: int
    newer: int
    asked: int

    @property
    def result(self) -> str:
        if self.stored:
            return "stored"
        return "conflict" if self.newer else ("unreachable" if not self.asked else "refused")


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[dict[bytes, Any]]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if len(data) > MAX_MESSAGE:
            return
        try:
            message = bdecode(data)
        except (BencodeError, ValueError):
            return
        if not isinstance(message, dict):
            return
        if message.get(b"y") == b"q" and self.transport is not None:
            # the nodes a put stored on note this socket as a node: answer at once that it
            # serves nothing (BEP 5 error 204), so their lookups do not wait on it
            error = {b"t": message.get(b"t", b""), b"y": b"e", b"e": [204, b"Method Unknown"]}
            self.transport.sendto(bencode(error), addr)
            return
        future = self.waiting.pop(message.get(b"t", b""), None)
        if future is not None and not future.done():
            future.set_result(message)


class Krpc:
    """A KRPC client socket bound to ``interface`` (an ephemeral port)."""

    def __init__(self, interface: str, *, local: bool) -> None:
        self.interface = interface
        self.local = local
        self.node_id = os.urandom(20)
        self._protocol = _Protocol()
        self._next = int.from_bytes(os.urandom(2), "big")

    async def __aenter__(self) -> Krpc:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: self._protocol, local_addr=(self.interface, 0)
        )
        self._protocol.transport = transport
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._protocol.transport is not None:
            self._protocol.transport.close()

    async def query(self, to: Endpoint, method: bytes, args: dict[bytes, Any]) -> dict[bytes, Any]:
        """The answer's ``r`` (or ``e`` under key b"e"); TimeoutError, OSError."""
        if self.local and not is_loopback(to[0]):
            raise OSError("a local DHT never sends off loopback")
        self._next = (self._next + 1) % 65536
        tid = self._next.to_bytes(2, "big")
        message = {
            b"t": tid,
            b"y": b"q",
            b"q": method,
            b"ro": 1,
            b"a": {b"id": self.node_id, **args},
        }
        future: asyncio.Future[dict[bytes, Any]] = asyncio.get_running_loop().create_future()
        self._protocol.waiting[tid] = future
        assert self._protocol.transport is not None
        try:
            self._protocol.transport.sendto(bencode(message), to)
            async with asyncio.timeout(QUERY_TIMEOUT_S):
                answer = await future
        finally:
            self._protocol.waiting.pop(tid, None)
        if answer.get(b"y") == b"e":
            return {b"e": answer.get(b"e")}
        reply = answer.get(b"r")
        if not isinstance(reply, dict):
            raise OSError("not a KRPC reply")
        return reply

    async def lookup(self, goal: bytes, seeds: Sequence[Endpoint]) -> list[tuple[Endpoint, bytes]]:
        """The (up to K) closest nodes to ``goal`` that answered ``get``, with their tokens."""
        goal_int = int.from_bytes(goal, "big")

        def distance(node: bytes) -> int:
            return int.from_bytes(node, "big") ^ goal_int

        known: dict[Endpoint, bytes] = {}  # endpoint -> node id (seeds: their distance unknown)
        for seed in seeds:
            known[seed] = goal  # asked first
        asked: set[Endpoint] = set()
        answered: dict[Endpoint, tuple[bytes, bytes]] = {}  # endpoint -> (node id, token)

        async def ask(to: Endpoint) -> None:
            try:
                reply = await self.query(to, b"get", {b"target": goal})
            except (TimeoutError, OSError, BencodeError):
                return
            node_id, token = reply.get(b"id"), reply.get(b"token")
            if isinstance(node_id, bytes) and len(node_id) == 20 and isinstance(token, bytes):
                answered[to] = (node_id, token)
            nodes = reply.get(b"nodes")
            for found_id, endpoint in compact_nodes(nodes if isinstance(nodes, bytes) else b""):
                if endpoint not in known and not (self.local and not is_loopback(endpoint[0])):
                    known[endpoint] = found_id

        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                while len(asked) < MAX_QUERIES:
                    closest = sorted(answered.items(), key=lambda kv: distance(kv[1][0]))[:K]
                    bound = distance(closest[-1][1][0]) if len(closest) == K else None
                    todo = [
                        ep
                        for ep, nid in sorted(known.items(), key=lambda kv: distance(kv[1]))
                        if ep not in asked and (bound is None or distance(nid) < bound)
                    ][:ALPHA]
                    if not todo:
                        break
                    asked.update(todo)
                    await asyncio.gather(*(ask(ep) for ep in todo))
        closest = sorted(answered.items(), key=lambda kv: distance(kv[1][0]))[:K]
        return [(ep, token) for ep, (_, token) in closest]

    async def put(self, record: pkarr.SignedRecord, seeds: Sequence[Endpoint]) -> PutResult:
        """Store ``record`` on the K nodes closest to its target."""
        nodes = await self.lookup(target(record.public), seeds)
        args = {b"k": record.public, b"seq": record.timestamp, b"sig": record.signature}

        async def one(to: Endpoint, token: bytes) -> str:
            try:
                reply = await self.query(to, b"put", {**args, b"token": token, b"v": record.dns})
            except (TimeoutError, OSError, BencodeError):
                return "lost"
            error = reply.get(b"e")
            if isinstance(error, list) and error and error[0] == 302:
                return "newer"
            return "error" if error is not None else "stored"

        outcomes = await asyncio.gather(*(one(ep, tok) for ep, tok in nodes))
        return PutResult(outcomes.count("stored"), outcomes.count("newer"), len(nodes))
