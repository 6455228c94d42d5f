"""Talking to the router (docs/spec/discovery.md section 11): what the port-mapping protocols
share. The default gateway, the address this host has towards it, a mapping's value, and the
bounded UDP exchange of PCP and NAT-PMP (a reply counts only from the gateway's own port; every
datagram that is refused is remembered, so a failure says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from polykey.network.graph import Address

ROUTE_TABLE = "/proc/net/route"
RTF_UP, RTF_GATEWAY = 0x1, 0x2
FIRST_WAIT_S = 0.25  # RFC 6886 3.1: first retransmission after 250 ms, then doubling

T = TypeVar("T")


class BadReply(ValueError):
    """A datagram that is not the reply asked for: refused (the exchange keeps waiting)."""


class NoMapping(Exception):
    """The router did not map the port; the reason is the message (no secret in it)."""


@dataclass(frozen=True)
class Mapping:
    external: Address  # the router's external address and the port it forwards
    internal_port: int
    lifetime: int  # seconds, as granted (0: until deleted, UPnP's permanent lease)
    gateway: str
    how: str = "NAT-PMP"

    def __str__(self) -> str:
        return f"{self.external} ({self.how})"


class Client(Protocol):
    """One port-mapping protocol spoken to one router."""

    name: str

    async def map(self, internal: int, external: int, lifetime: int) -> Mapping:
        """Map (or renew) TCP ``internal``, suggesting ``external``; NoMapping if not."""

    async def unmap(self, mapping: Mapping) -> None:
        """Delete ``mapping``; NoMapping or OSError if the router did not confirm."""


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


def source_address(gateway: str, local: str = "0.0.0.0") -> str:  # noqa: S104
    """The address this host's packets to ``gateway`` come from (a UDP connect: nothing sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((local, 0))
        s.connect((gateway, 9))
        return str(s.getsockname()[0])


def usable_external(address: str) -> str:
    """``address`` if it can be an external address; NoMapping otherwise."""
    try:
        ip = ipaddress.IPv4Address(address)
    except ValueError:
        raise NoMapping("the router named no usable external address") from None
    if ip.is_unspecified or ip.is_loopback or ip.is_multicast or ip.is_link_local:
        raise NoMapping(f"the router has no usable external address ({ip})")
    if ip.is_reserved:
        raise NoMapping(f"the router has no usable external address ({ip})")
    return str(ip)


class _Replies(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue(maxsize=16)

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self.queue.put_nowait((data, (str(addr[0]), int(addr[1]))))


async def exchange(
    request: bytes | Sequence[bytes],
    parse: Callable[[bytes], T],
    *,
    gateway: str,
    port: int,
    local: str,
    timeout: float,
    max_size: int,
    to: tuple[str, int] | None = None,
    any_port: bool = False,
) -> T:
    """Send ``request`` to gateway:port (resent at 0, 250, 750 ms ...) and return the first
    reply ``parse`` takes, within ``timeout``. A datagram from another address or port, longer
    than ``max_size``, or that ``parse`` refuses (BadReply) is not taken; NoMapping then names
    the last refusal, or says that nothing answered. ``parse`` may raise NoMapping itself (a
    refusal by the router). ``to``: send there instead (a multicast group: out of the
    interface facing the gateway only, TTL 2), and with ``any_port`` take replies from any
    port of the gateway."""
    loop = asyncio.get_running_loop()
    source, refused = (gateway, port), ""
    to = to or source
    requests = [request] if isinstance(request, bytes) else list(request)
    transport, replies = await loop.create_datagram_endpoint(
        _Replies, local_addr=(local, 0), family=socket.AF_INET
    )
    try:
        if ipaddress.IPv4Address(to[0]).is_multicast:
            sock = transport.get_extra_info("socket")
            here = socket.inet_aton(source_address(gateway, local))
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, here)
            sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 2)
        deadline, wait = loop.time() + timeout, FIRST_WAIT_S
        while (left := deadline - loop.time()) > 0:
            for one in requests:
                transport.sendto(one, to)
            resend, wait = loop.time() + min(wait, left), wait * 2
            while (until := resend - loop.time()) > 0:
                try:
                    data, sender = await asyncio.wait_for(replies.queue.get(), until)
                except TimeoutError:
                    break
                if sender[0] != gateway or (sender[1] != port and not any_port):
                    refused = f"a reply from {sender[0]}:{sender[1]}, not the gateway"
                elif len(data) > max_size:
                    refused = f"a reply of {len(data)} bytes, more than {max_size}"
                else:
                    try:
                        return parse(data)
                    except BadReply as exc:
                        refused = str(exc)
    finally:
        transport.close()
    if refused:
        raise NoMapping(f"refused the router's reply: {refused}")
    raise NoMapping(f"no answer from the router {gateway}")
