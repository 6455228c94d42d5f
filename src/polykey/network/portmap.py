"""Port mapping (docs/spec/discovery.md section 11): asking the router to forward the agent's
peer port, with PCP (RFC 6887, network/pcp.py), else NAT-PMP (RFC 6886, here), else UPnP IGD
(network/upnp.py): the first that maps it is used.

Off unless the agent is started with ``--map-port``. The router is the default gateway read
from ``/proc/net/route``; it is asked a TCP mapping of the peer port (a lifetime of LIFETIME_S,
renewed at half of what it grants, by the protocol that mapped it), and the mapping is deleted
when the agent stops. Every exchange is bounded: a router that does not answer costs TIMEOUT_S
per protocol (the RFCs' retransmissions at 250 ms, 500 ms, ... cut short), in the background.
A reply is taken only from the gateway, of the exact size and kind asked for; anything else
(malformed, oversized, from another address) is refused, and the failure says why. A reply is
not authenticated: a lie about the public address can only make peers fail to connect (the SSH
host key pin decides).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import struct
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from polykey.network.gateway import (
    BadReply,
    Client,
    Mapping,
    NoMapping,
    default_gateway,
    exchange,
    usable_external,
)
from polykey.network.graph import Address
from polykey.network.pcp import PcpClient
from polykey.network.upnp import SSDP, UpnpClient

__all__ = ["BadReply", "Mapping", "NoMapping", "PortMapper", "default_gateway"]

log = logging.getLogger("polykey.network")

NATPMP_PORT = 5351
VERSION = 0
OP_ADDRESS, OP_MAP_UDP, OP_MAP_TCP = 0, 1, 2
REPLY = 128  # a reply's opcode: the request's plus 128
LIFETIME_S = 7200  # RFC 6886's recommendation
TIMEOUT_S = 1.0  # one exchange, retransmissions included
RETRY_S = 300.0  # a router that refused or did not answer is asked again this often
MIN_RENEW_S = 30.0  # a router granting a tiny lifetime is not asked more often than this
PROTOCOLS = ("PCP", "NAT-PMP", "UPnP IGD")  # the order they are tried in
RESULTS = {
    1: "unsupported version",
    2: "not authorised (port mapping is off on the router)",
    3: "network failure (the router has no external address)",
    4: "out of resources",
    5: "unsupported opcode",
}


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
            raise BadReply(f"a reply of {len(data)} bytes, not {size}")
        raise NoMapping(f"the router refused: {RESULTS.get(result, f'result code {result}')}")
    if len(data) != size:
        raise BadReply(f"a reply of {len(data)} bytes, not {size}")
    return int(epoch)


def parse_address_reply(data: bytes) -> str:
    """The external IPv4 address from a reply to ``address_request``."""
    _header(data, OP_ADDRESS, 12)
    return usable_external(str(ipaddress.IPv4Address(data[8:12])))


def parse_map_reply(data: bytes, internal: int, op: int = OP_MAP_TCP) -> tuple[int, int]:
    """(external port, lifetime) from a reply to a mapping request for ``internal``."""
    _header(data, op, 16)
    port, external, lifetime = struct.unpack_from("!HHI", data, 8)
    if port != internal:
        raise BadReply("a reply about another port")
    return int(external), int(lifetime)


class NatPmpClient:
    """NAT-PMP to ``gateway``: its external address, then the mapping."""

    name = "NAT-PMP"

    def __init__(self, gateway: str, *, local: str, port: int, timeout: float) -> None:
        self.gateway, self.local, self.port, self.timeout = gateway, local, port, timeout

    async def _ask(self, request: bytes, parse: Callable[[bytes], Any]) -> Any:
        return await exchange(
            request,
            parse,
            gateway=self.gateway,
            port=self.port,
            local=self.local,
            timeout=self.timeout,
            max_size=16,
        )

    async def map(self, internal: int, external: int, lifetime: int) -> Mapping:
        host: str = await self._ask(address_request(), parse_address_reply)
        request = map_request(internal, external, lifetime)
        port, granted = await self._ask(request, lambda d: parse_map_reply(d, internal))
        if not port or not granted:
            raise NoMapping("the router granted no mapping")
        return Mapping(Address(host, port), internal, granted, self.gateway, self.name)

    async def unmap(self, mapping: Mapping) -> None:
        internal = mapping.internal_port
        await self._ask(map_request(internal, 0, 0), lambda d: parse_map_reply(d, internal))


# --- keeping the port mapped -----------------------------------------------------------------


class PortMapper:
    """Keeps the peer port ``port`` mapped on the router while ``run`` runs; ``close`` deletes
    the mapping. ``host`` is the address the agent listens on (the mapping points at the
    address its requests come from); ``gateway`` None: the default gateway. ``server_port``
    (PCP and NAT-PMP) and ``ssdp`` (UPnP's search) are for tests; ``protocols`` is tried in
    order."""

    def __init__(
        self,
        port: int,
        *,
        host: str = "",
        gateway: str | None = None,
        server_port: int = NATPMP_PORT,
        ssdp: tuple[str, int] = SSDP,
        lifetime: int = LIFETIME_S,
        timeout: float = TIMEOUT_S,
        protocols: Sequence[str] = PROTOCOLS,
    ) -> None:
        self.port, self.gateway, self.server_port, self.ssdp = port, gateway, server_port, ssdp
        self.local = host if host and not host.startswith(("0.", "127.", ":")) else "0.0.0.0"  # noqa: S104
        self.lifetime, self.timeout, self.protocols = lifetime, timeout, tuple(protocols)
        self.mapping: Mapping | None = None
        self.client: Client | None = None  # the protocol that mapped the port
        self.clients: dict[str, Client] = {}
        self.error = ""

    def __repr__(self) -> str:
        return f"PortMapper({self.port}, {self.mapping or self.error or 'not mapped'})"

    def _client(self, name: str, gateway: str) -> Client:
        if name not in self.clients:
            client: Client
            if name == "PCP":
                client = PcpClient(
                    gateway, local=self.local, port=self.server_port, timeout=self.timeout
                )
            elif name == "NAT-PMP":
                client = NatPmpClient(
                    gateway, local=self.local, port=self.server_port, timeout=self.timeout
                )
            else:
                client = UpnpClient(gateway, local=self.local, ssdp=self.ssdp, timeout=self.timeout)
            self.clients[name] = client
        return self.clients[name]

    async def map_once(self) -> Mapping:
        """Map the port (a new mapping, or the same renewed): by the protocol that mapped it
        before, else by each in turn; NoMapping names why each failed."""
        if self.gateway is None:
            self.gateway = await asyncio.to_thread(default_gateway)
            if self.gateway is None:
                raise NoMapping("no default gateway to ask")
        wanted = self.mapping.external.port if self.mapping is not None else self.port
        names = [self.client.name] if self.client is not None else []
        names += [n for n in self.protocols if n not in names]
        reasons: list[str] = []
        for name in names:
            client = self._client(name, self.gateway)
            try:
                mapping = await client.map(self.port, wanted, self.lifetime)
            except NoMapping as exc:
                reasons.append(f"{name}: {exc}")
                continue
            except OSError as exc:
                reasons.append(f"{name}: {type(exc).__name__}")
                continue
            self.client = client
            return mapping
        self.client = None
        raise NoMapping("; ".join(reasons))

    async def run(self, on_change: Callable[[Mapping | None], Awaitable[None]]) -> None:
        """Map, renew at half the granted lifetime, and try again every RETRY_S after a
        failure; ``on_change`` is awaited whenever the public address appears, moves or goes."""
        while True:
            try:
                mapping: Mapping | None = await self.map_once()
                self.error = ""
            except NoMapping as exc:
                mapping, self.error = None, str(exc)
                log.info("port mapping: %s", self.error)
            before = self.mapping.external if self.mapping is not None else None
            self.mapping = mapping
            if (mapping.external if mapping is not None else None) != before:
                log.info("port mapping: %s", mapping or "gone")
                try:
                    await on_change(mapping)
                except Exception as exc:  # publishing fails: its own loop tries again
                    log.warning("port mapping: publishing failed: %s", type(exc).__name__)
            await asyncio.sleep(self._wait(mapping))

    def _wait(self, mapping: Mapping | None) -> float:
        if mapping is None:
            return RETRY_S
        granted = mapping.lifetime or self.lifetime  # a permanent lease: checked all the same
        return max(MIN_RENEW_S, granted / 2)

    async def close(self) -> None:
        """Delete the mapping (one bounded exchange); the router forgets it anyway when its
        lifetime ends."""
        mapping, self.mapping = self.mapping, None
        if mapping is None or self.client is None:
            return
        try:
            await self.client.unmap(mapping)
            log.info("port mapping deleted: %s", mapping)
        except (NoMapping, OSError) as exc:
            log.info("port mapping not deleted (%s): it expires by itself", type(exc).__name__)

    def status(self) -> dict[str, Any]:
        """``how``: the protocol that mapped the port (None while not mapped)."""
        how = self.mapping.how if self.mapping is not None else None
        doc: dict[str, Any] = {"how": how, "port": self.port, "gateway": self.gateway}
        if self.mapping is not None:
            doc["mapped"] = str(self.mapping.external)
            doc["lifetime"] = self.mapping.lifetime
        elif self.error:
            doc["error"] = self.error
        return doc
