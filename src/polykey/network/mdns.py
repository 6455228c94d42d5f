"""The LAN: multicast DNS (zeroconf), service ``_polykey._tcp.local.``.

An agent serving peers on a LAN address announces ``<name>._polykey._tcp.local.`` (``name``
the z-base-32 of its key) whose TXT properties carry its own signed Pkarr record for those
addresses and the relays it names (``v=1``, then ``r0``, ``r1``, ... the relay payload's
base64 in pieces), so a resolver takes only what the node itself signed: another host on the
LAN can answer for the name, but not with a record that verifies. The SRV and A records are not
used for the address (a record naming only relays still has A records: this machine's).
docs/spec/discovery.md section 4.

zeroconf runs its own thread; its blocking calls are made from worker threads here.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import socket
from typing import TYPE_CHECKING, Any

from polykey.ids import NodeId
from polykey.network import pkarr, zbase32
from polykey.network.resolve import Found, relays_of

if TYPE_CHECKING:
    from zeroconf import ServiceInfo, Zeroconf

log = logging.getLogger("polykey.network")

SERVICE = "_polykey._tcp.local."
LOOKUP_TIMEOUT_S = 1.5  # Polykey's mDNS query timeout
PIECE_CHARS = 200  # base64 characters per TXT property (each at most 255 bytes)
MAX_PIECES = 8
CLOSE_WAIT_S = 5.0  # for a registration under way (its probes and announcements take ~2 s)


def instance(public: bytes) -> str:
    return f"{zbase32.encode(public)}.{SERVICE}"


def properties(record: pkarr.SignedRecord) -> dict[str, str]:
    """The TXT properties announcing ``record``."""
    text = base64.b64encode(record.relay_payload()).decode("ascii")
    pieces = [text[i : i + PIECE_CHARS] for i in range(0, len(text), PIECE_CHARS)]
    return {"v": "1", **{f"r{i}": piece for i, piece in enumerate(pieces)}}


def record_from(public: bytes, props: dict[bytes, bytes | None]) -> pkarr.SignedRecord:
    """The record TXT properties carry for ``public``, verified; BadRecord otherwise."""
    if props.get(b"v") != b"1":
        raise pkarr.BadRecord("the LAN announcement is not version 1")
    pieces: list[bytes] = []
    for i in range(MAX_PIECES):
        piece = props.get(f"r{i}".encode())
        if piece is None:
            break
        pieces.append(piece)
    try:
        payload = base64.b64decode(b"".join(pieces), validate=True)
    except ValueError:
        raise pkarr.BadRecord("the LAN announcement is not base64") from None
    return pkarr.from_relay_payload(public, payload)


def open_zeroconf(host: str | None) -> Zeroconf:
    """A zeroconf instance on ``host``'s interface (an IPv4 address), or on every interface
    when ``host`` is None or a wildcard."""
    from zeroconf import InterfaceChoice, IPVersion, Zeroconf

    if host in (None, "", "0.0.0.0", "::"):  # noqa: S104 (a wildcard given, not bound here)
        return Zeroconf(interfaces=InterfaceChoice.All, ip_version=IPVersion.V4Only)
    return Zeroconf(interfaces=[host], ip_version=IPVersion.V4Only)


class Announcer:
    """This node on the LAN: registered once, updated when its record changes."""

    def __init__(self, zc: Zeroconf, port: int) -> None:
        self.zc = zc
        self.port = port
        self.info: ServiceInfo | None = None
        self._busy: asyncio.Future[None] | None = None  # a registration under way (a thread)

    def _info(self, record: pkarr.SignedRecord) -> ServiceInfo:
        from zeroconf import ServiceInfo

        # A records, not used for the address but needed for a complete DNS-SD answer: the
        # record's own, else (it names relays only, or names) this machine's LAN addresses
        v4 = [a.host for a in record.addresses if _is_v4(a.host)] or lan_addresses()[:5]
        return ServiceInfo(
            SERVICE,
            instance(record.public),
            port=self.port,
            properties=properties(record),
            server=f"{zbase32.encode(record.public)}.local.",
            addresses=[socket.inet_aton(h) for h in v4],
        )

    async def announce(self, record: pkarr.SignedRecord) -> None:
        info = self._info(record)
        if self.info is None:
            call = asyncio.to_thread(self.zc.register_service, info, allow_name_change=False)
        else:
            call = asyncio.to_thread(self.zc.update_service, info)
        before, self.info = self.info, info
        self._busy = asyncio.ensure_future(call)
        try:
            await asyncio.shield(self._busy)  # cancelled, the thread goes on: close() waits
        except asyncio.CancelledError:
            raise
        except Exception:
            self.info = before  # not registered: the next round registers again
            raise

    async def close(self) -> None:
        """Unregistered (goodbye packets), after a registration under way has ended (a thread
        left registering on a closed zeroconf never ends, and the agent's exit waits on it)."""
        if self._busy is not None and not self._busy.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._busy), CLOSE_WAIT_S)
        if self.info is not None:
            await asyncio.to_thread(self.zc.unregister_service, self.info)
            self.info = None


class ByLan:
    """The resolution strategy of the LAN: ask for the node's instance, verify its record."""

    how = "lan"

    def __init__(self, zc: Zeroconf, timeout: float = LOOKUP_TIMEOUT_S) -> None:
        self.zc = zc
        self.timeout = timeout

    async def find(self, node_id: NodeId) -> Found | None:
        public = bytes(node_id)
        props = await asyncio.to_thread(self._ask, public)
        if props is None:
            return None
        try:
            record = record_from(public, props)
        except pkarr.BadRecord as exc:
            log.info("a LAN answer for a node was refused: %s", exc.detail)
            return None
        return Found(node_id, record.addresses, self.how, "mdns", relays=relays_of(record.relays))

    def _ask(self, public: bytes) -> dict[bytes, bytes | None] | None:
        from zeroconf import ServiceInfo

        info = ServiceInfo(SERVICE, instance(public))
        if not info.request(self.zc, int(self.timeout * 1000)):
            return None
        props: dict[bytes, bytes | None] = dict(info.properties)
        return props


def _is_v4(host: str) -> bool:
    try:
        socket.inet_aton(host)
    except OSError:
        return False
    return host.count(".") == 3


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (for a wildcard --host)."""
    import ifaddr

    found: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            address: Any = ip.ip
            if isinstance(address, str) and _is_v4(address) and not address.startswith("127."):
                found.append(address)
    return sorted(set(found))
