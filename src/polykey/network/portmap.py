"""Port mapping (docs/spec/discovery.md section 11): asking the router to forward the agent's
peer port, with NAT-PMP (RFC 6886).

Off unless the agent is started with ``--map-port``. The router is the default gateway read
from ``/proc/net/route``; it is asked its external address and a TCP mapping of the peer port
(a lifetime of LIFETIME_S, renewed at half of what it grants), and the mapping is deleted when
the agent stops. Every exchange is bounded: a router that does not answer costs TIMEOUT_S (the
RFC's retransmissions at 250 ms, 500 ms, ... cut short), in the background. A reply is taken
only from the gateway's port 5351, of the exact size and opcode asked for; anything else
(malformed, oversized, from another address) is ignored. A reply is not authenticated: a lie
about the public address can only make peers fail to connect (the SSH host key pin decides).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from polykey.network.graph import Address

log = logging.getLogger("polykey.network")

NATPMP_PORT = 5351
VERSION = 0
OP_ADDRESS, OP_MAP_UDP, OP_MAP_TCP = 0, 1, 2
REPLY = 128  # a reply's opcode: the request's plus 128
LIFETIME_S = 7200  # RFC 6886's recommendation
TIMEOUT_S = 1.0  # one exchange, retransmissions included
FIRST_WAIT_S = 0.25  # RFC 6886 3.1: first retransmission after 250 ms, then doubling
RETRY_S = 300.0  # a router that refused or did not answer is asked again this often
MIN_RENEW_S = 30.0  # a router granting a tiny lifetime is not asked more often than this
ROUTE_TABLE = "/proc/net/route"
RTF_UP, RTF_GATEWAY = 0x1, 0x2
RESULTS = {
    1: "unsupported version",
    2: "not authorised (port mapping is off on the router)",
    3: "network failure (the router has no external address)",
    4: "out of resources",
    5: "unsupported opcode",
}

T = TypeVar("T")


class BadReply(ValueError):
    """A datagram that is not the reply asked for: ignored."""


class NoMapping(Exception):
    """The router did not map the port; the reason is the message (no secret in it)."""


@dataclass(frozen=True)
class Mapping:
    external: Address  # the router's external address and the port it forwards
    internal_port: int
    lifetime: int  # seconds, as granted
    gateway: str
    how: str = "NAT-PMP"

    def __str__(self) -> str:
        return f"{self.external} ({self.how})"


def default_gateway(route_table: str = ROUTE_TABLE) -> str | None:
    """The IPv4 default gateway (lowest metric) from the kernel's routing table, or None."""
    try:
        with open(route_table, encoding="ascii") as f:
            lines = f.read(1 << 16).splitlines()[1:]
    except (OSError, UnicodeDecodeError):
        return None
    best: tuple[int, str] | None = None
    for line in lines:
        fields = line.split()
        if len(fields) < 8:
            continue
        try:
            dest, gateway, flags = (int(fields[i], 16) for i in (1, 2, 3))
            metric, mask = int(fields[6]), int(fields[7], 16)
        except ValueError:
            continue
        if dest or mask or flags & (RTF_UP | RTF_GATEWAY) != RTF_UP | RTF_GATEWAY or not gateway:
            continue
        if gateway > 0xFFFFFFFF:
            continue
        host = str(ipaddress.IPv4Address(gateway.to_bytes(4, "little")))
        if best is None or metric < best[0]:
            best = (metric, host)
    return None if best is None else best[1]


# --- the wire (RFC 6886 sections 3.2 and 3.3) ---------------------------------------------


def address_request() -> bytes:
    return bytes([VERSION, OP_ADDRESS])


def map_request(internal: int, external: int, lifetime: int, op: int = OP_MAP_TCP) -> bytes:
    """A mapping request; lifetime 0 with external 0 deletes the mapping."""
    return struct.pack("!BBHHHI", VERSION, op, 0, internal, external, lifetime)


def _header(data: bytes, op: int, size: int) -> int:
    """The epoch of a reply to ``op`` of ``size`` bytes; NoMapping for a refusal (result code),
    BadReply for anything that is not such a reply."""
    if len(data) < 8 or data[0] != VERSION or data[1] != REPLY + op:
        raise BadReply("not a reply to this request")
    result, epoch = struct.unpack_from("!HI", data, 2)
    if result:
        if len(data) not in (8, size):
            raise BadReply("wrong size")
        raise NoMapping(f"the router refused: {RESULTS.get(result, f'result code {result}')}")
    if len(data) != size:
        raise BadReply("wrong size")
    return int(epoch)


def parse_address_reply(data: bytes) -> str:
    """The external IPv4 address from a reply to ``address_request``."""
    _header(data, OP_ADDRESS, 12)
    address = ipaddress.IPv4Address(data[8:12])
    if address.is_unspecified or address.is_loopback or address.is_multicast:
        raise NoMapping(f"the router has no usable external address ({address})")
    if address.is_link_local or address.is_reserved:
        raise NoMapping(f"the router has no usable external address ({address})")
    return str(address)


def parse_map_reply(data: bytes, internal: int, op: int = OP_MAP_TCP) -> tuple[int, int]:
    """(external port, lifetime) from a reply to a mapping request for ``internal``."""
    _header(data, op, 16)
    port, external, lifetime = struct.unpack_from("!HHI", data, 8)
    if port != internal:
        raise BadReply("a reply about another port")
    return int(external), int(lifetime)


# --- the exchange ----------------------------------------------------------------------------


class _Replies(asyncio.DatagramProtocol):
    def __init__(self, source: tuple[str, int]) -> None:
        self.source = source
        self.queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        if (addr[0], addr[1]) != self.source or len(data) > 16:
            return  # another sender, or no NAT-PMP reply: ignored
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait(data)


class PortMapper:
    """Keeps the peer port ``port`` mapped on the router while ``run`` runs; ``close`` deletes
    the mapping. ``host`` is the address the agent listens on (the mapping points at the
    address its requests come from); ``gateway`` None: the default gateway."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "",
        gateway: str | None = None,
        server_port: int = NATPMP_PORT,
        lifetime: int = LIFETIME_S,
        timeout: float = TIMEOUT_S,
    ) -> None:
        self.port, self.gateway, self.server_port = port, gateway, server_port
        self.local = host if host and not host.startswith(("0.", "127.", ":")) else "0.0.0.0"  # noqa: S104
        self.lifetime, self.timeout = lifetime, timeout
        self.mapping: Mapping | None = None
        self.error = ""

    def __repr__(self) -> str:
        return f"PortMapper({self.port}, {self.mapping or self.error or 'not mapped'})"

    async def _ask(self, request: bytes, parse: Callable[[bytes], T]) -> T:
        assert self.gateway is not None
        loop = asyncio.get_running_loop()
        source = (self.gateway, self.server_port)
        transport, replies = await loop.create_datagram_endpoint(
            lambda: _Replies(source), local_addr=(self.local, 0), family=socket.AF_INET
        )
        try:
            deadline, wait = loop.time() + self.timeout, FIRST_WAIT_S
            while (left := deadline - loop.time()) > 0:
                transport.sendto(request, source)
                resend, wait = loop.time() + min(wait, left), wait * 2
                while (until := resend - loop.time()) > 0:
                    try:
                        data = await asyncio.wait_for(replies.queue.get(), until)
                    except TimeoutError:
                        break
                    with contextlib.suppress(BadReply):
                        return parse(data)
        finally:
            transport.close()
        raise NoMapping(f"no answer from the router {self.gateway} (NAT-PMP)")

    async def map_once(self) -> Mapping:
        """Ask for the external address and the mapping (a new one, or the same renewed)."""
        if self.gateway is None:
            self.gateway = await asyncio.to_thread(default_gateway)
            if self.gateway is None:
                raise NoMapping("no default gateway to ask")
        host = await self._ask(address_request(), parse_address_reply)
        wanted = self.mapping.external.port if self.mapping is not None else self.port
        request = map_request(self.port, wanted, self.lifetime)
        external, lifetime = await self._ask(request, lambda d: parse_map_reply(d, self.port))
        if not external or not lifetime:
            raise NoMapping("the router granted no mapping")
        return Mapping(Address(host, external), self.port, lifetime, self.gateway)

    async def run(self, on_change: Callable[[Mapping | None], Awaitable[None]]) -> None:
        """Map, renew at half the granted lifetime, and try again every RETRY_S after a
        failure; ``on_change`` is awaited whenever the public address appears, moves or goes."""
        while True:
            try:
                mapping: Mapping | None = await self.map_once()
                self.error = ""
            except (NoMapping, OSError) as exc:
                mapping, self.error = None, str(exc) if isinstance(exc, NoMapping) else "no route"
                log.info("port mapping: %s", self.error)
            before = self.mapping.external if self.mapping is not None else None
            self.mapping = mapping
            if (mapping.external if mapping is not None else None) != before:
                log.info("port mapping: %s", mapping or "gone")
                try:
                    await on_change(mapping)
                except Exception as exc:  # publishing fails: its own loop tries again
                    log.warning("port mapping: publishing failed: %s", type(exc).__name__)
            wait = max(MIN_RENEW_S, mapping.lifetime / 2) if mapping is not None else RETRY_S
            await asyncio.sleep(wait)

    async def close(self) -> None:
        """Delete the mapping (one bounded exchange); the router forgets it anyway when its
        lifetime ends."""
        mapping, self.mapping = self.mapping, None
        if mapping is None:
            return
        request = map_request(self.port, 0, 0)
        try:
            await self._ask(request, lambda d: parse_map_reply(d, self.port))
            log.info("port mapping deleted: %s", mapping)
        except (NoMapping, OSError) as exc:
            log.info("port mapping not deleted (%s): it expires by itself", type(exc).__name__)

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"how": "NAT-PMP", "port": self.port, "gateway": self.gateway}
        if self.mapping is not None:
            doc["mapped"] = str(self.mapping.external)
            doc["lifetime"] = self.mapping.lifetime
        elif self.error:
            doc["error"] = self.error
        return doc
