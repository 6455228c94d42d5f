"""PCP (RFC 6887), NAT-PMP's successor on the same UDP port 5351 (docs/spec/discovery.md
section 11): the MAP opcode for one TCP port, over IPv4, no options.

A MAP request carries a random 96-bit nonce that the reply must echo (with the protocol and
the internal port): a reply that does not is refused, so an off-path guess cannot move the
mapping. The nonce is kept for the renewals and the deletion, as section 11.2 requires. A
router that speaks only NAT-PMP answers a PCP request with NAT-PMP's "unsupported version"
(section 9): that ends the exchange at once, and the caller falls back to NAT-PMP.
"""

from __future__ import annotations

import ipaddress
import os
import struct

from polykey.network.gateway import (
    BadReply,
    Mapping,
    NoMapping,
    exchange,
    source_address,
    usable_external,
)
from polykey.network.graph import Address

PCP_PORT = 5351
VERSION = 2
OP_MAP = 1
RESPONSE = 0x80  # the R bit of a response's opcode byte
TCP = 6
HEADER_SIZE, MAP_SIZE = 24, 60
V4_MAPPED = bytes(10) + b"\xff\xff"
RESULTS = {
    1: "unsupported version",
    2: "not authorised (port mapping is off on the router)",
    3: "malformed request",
    4: "unsupported opcode",
    5: "unsupported option",
    6: "malformed option",
    7: "network failure (the router has no external address)",
    8: "out of resources",
    9: "unsupported protocol",
    10: "user over quota",
    11: "cannot provide the external address or port",
    12: "address mismatch (another NAT between this host and the router)",
    13: "excessive remote peers",
}


class OlderRouter(NoMapping):
    """The router speaks an older version (NAT-PMP): the caller falls back to it."""


def mapped_v4(address: str) -> bytes:
    """An IPv4 address as PCP carries it: IPv4-mapped IPv6 (RFC 6887 section 5)."""
    return V4_MAPPED + ipaddress.IPv4Address(address).packed


def map_request(
    nonce: bytes,
    client: str,
    internal: int,
    external: int,
    lifetime: int,
    suggested: str = "0.0.0.0",  # noqa: S104 (no preference, RFC 6887 section 11.1)
) -> bytes:
    """A MAP request for TCP ``internal`` from ``client``; lifetime 0 deletes the mapping."""
    if len(nonce) != 12:
        raise ValueError("a PCP nonce is 96 bits")
    header = struct.pack("!BBHI16s", VERSION, OP_MAP, 0, lifetime, mapped_v4(client))
    body = struct.pack("!12sB3xHH16s", nonce, TCP, internal, external, mapped_v4(suggested))
    return header + body


def parse_map_reply(data: bytes, nonce: bytes, internal: int) -> tuple[str, int, int]:
    """(external address, external port, lifetime) from the reply to a MAP request with
    ``nonce`` for TCP ``internal``. OlderRouter: the router speaks NAT-PMP (or an older PCP);
    NoMapping: a refusal (result code); BadReply: anything that is not this reply."""
    if len(data) in (8, 12, 16) and data[0] == 0 and data[1] >= 128 and data[2:4] == b"\0\1":
        raise OlderRouter("the router speaks NAT-PMP, not PCP")  # its "unsupported version"
    if len(data) < HEADER_SIZE:
        raise BadReply("a reply too short for PCP")
    version, op, _, result = data[:4]
    if version != VERSION:
        if result == 1 and op == RESPONSE | OP_MAP and version < VERSION:
            raise OlderRouter(f"the router speaks PCP version {version}, not {VERSION}")
        raise BadReply(f"PCP version {version}")
    if op != RESPONSE | OP_MAP:
        raise BadReply("not a reply to MAP")
    if len(data) not in (HEADER_SIZE, MAP_SIZE) or (len(data) == HEADER_SIZE and not result):
        raise BadReply(f"a reply of {len(data)} bytes, not {MAP_SIZE}")
    lifetime = struct.unpack_from("!I", data, 4)[0]
    if len(data) == MAP_SIZE:
        echoed, protocol, port, external, address = struct.unpack_from("!12sB3xHH16s", data, 24)
        if echoed != nonce:
            raise BadReply("wrong nonce")
        if protocol != TCP or port != internal:
            raise BadReply("a reply about another mapping")
    if result:
        raise NoMapping(f"the router refused: {RESULTS.get(result, f'result code {result}')}")
    if not address.startswith(V4_MAPPED):
        raise NoMapping("the router named an IPv6 external address")
    return str(ipaddress.IPv4Address(address[12:])), int(external), int(lifetime)


class PcpClient:
    """PCP to ``gateway``; one nonce for the life of the mapping."""

    name = "PCP"

    def __init__(self, gateway: str, *, local: str, port: int, timeout: float) -> None:
        self.gateway, self.local, self.port, self.timeout = gateway, local, port, timeout
        self.nonce = os.urandom(12)
        self.client = ""  # the address the router sees the requests come from

    async def _ask(self, internal: int, external: int, lifetime: int, suggested: str) -> Mapping:
        if not self.client:
            self.client = source_address(self.gateway, self.local)
        request = map_request(self.nonce, self.client, internal, external, lifetime, suggested)
        try:
            host, port, granted = await exchange(
                request,
                lambda d: parse_map_reply(d, self.nonce, internal),
                gateway=self.gateway,
                port=self.port,
                local=self.local,
                timeout=self.timeout,
                max_size=1100,  # PCP's largest message; anything else is refused by size
            )
        except NoMapping:
            self.client = ""  # this host's address may have changed: found again next time
            raise
        return Mapping(Address(host, port), internal, granted, self.gateway, self.name)

    async def map(self, internal: int, external: int, lifetime: int) -> Mapping:
        mapping = await self._ask(internal, external, lifetime, "0.0.0.0")  # noqa: S104
        usable_external(mapping.external.host)
        if not mapping.external.port or not mapping.lifetime:
            raise NoMapping("the router granted no mapping")
        return mapping

    async def unmap(self, mapping: Mapping) -> None:
        await self._ask(mapping.internal_port, 0, 0, "0.0.0.0")  # noqa: S104
