"""The BitTorrent Mainline DHT through libtorrent: a node's Pkarr record as a BEP 44 item.

libtorrent (an optional dependency, ``pip install polykey[dht]``) is imported only when a DHT
is started; without it ``available()`` is False and discovery uses the Pkarr relays alone.

A session is made from ``session_settings``, never from libtorrent's defaults: no default
bootstrap router, no local peer discovery, UPnP or NAT-PMP, listening only on the interface
given; it learns the DHT from the bootstrap list the user configured (`pk nodes
dht-bootstrap`, kept in the node, or ``PK_DHT_BOOTSTRAP``, which overrides it; none by default,
so no DHT runs). A ``read_only`` session (``--no-publish``) answers no query
and puts nothing: it only looks records up.

Reads use libtorrent's ``dht_get_mutable_item(public_key, salt)``: each answer is the item's
``seq``, ``sig`` and ``v``, checked here again as a Pkarr relay payload (pkarr.py) and kept in
a RecordCache, so a record with a bad signature, or older than one seen before, never wins.
Writes use network/krpc.py (libtorrent's put would sign its own sequence number).
docs/spec/discovery.md section 7.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from polykey.errors import InvalidInput
from polykey.ids import NodeId
from polykey.network import pkarr
from polykey.network.graph import Address, parse_address
from polykey.network.krpc import Krpc, PutResult, is_loopback
from polykey.network.resolve import Found, relays_of

log = logging.getLogger("polykey.network")

GET_TIMEOUT_S = 5.0
JOIN_POLL_S = 0.05
GRACE_S = 0.2  # after the first verified answer, for a newer one from another node
MAINLINE = (  # the routers Pkarr's mainline crate starts from; used only when asked by name
    Address("router.bittorrent.com", 6881),
    Address("dht.transmissionbt.com", 6881),
    Address("dht.libtorrent.org", 25401),
    Address("relay.pkarr.org", 6881),
)


def available() -> bool:
    """Whether libtorrent can be imported (the DHT is used only then)."""
    try:
        import libtorrent  # noqa: F401
    except ImportError:
        return False
    return True


BOOTSTRAP_HINT = "Give HOST:PORT of DHT nodes, or `mainline` for the public DHT's routers."


def parse_bootstrap(text: str) -> tuple[Address, ...]:
    """A comma-separated list of HOST:PORT, or ``mainline`` for the public DHT's routers."""
    found: list[Address] = []
    for part in bootstrap_entries([text]):
        found.extend(MAINLINE if part == "mainline" else [parse_address(part)])
    return tuple(dict.fromkeys(found))


def bootstrap_entries(texts: Sequence[str]) -> list[str]:
    """The entries of a bootstrap list as kept (`pk nodes dht-bootstrap`): each ``mainline``
    or a checked ``HOST:PORT``, once, in order; each text may hold several, comma-separated.
    InvalidInput (exit 3) for anything else, or for none at all."""
    entries: list[str] = []
    for part in (p.strip() for text in texts for p in text.split(",")):
        if part == "mainline":
            entries.append(part)
        elif part:
            try:
                entries.append(str(parse_address(part)))
            except InvalidInput:
                raise InvalidInput(
                    f"not a DHT bootstrap entry: {part[:80]!r}", hint=BOOTSTRAP_HINT
                ) from None
    if not entries:
        raise InvalidInput("the DHT bootstrap list is empty", hint=BOOTSTRAP_HINT)
    return list(dict.fromkeys(entries))


@dataclass(frozen=True)
class DhtConfig:
    """Where a session listens and what it starts from. ``local``: every bootstrap node is on
    loopback (a DHT of local sessions, for tests and demos): then the session listens on
    loopback, and libtorrent's limits on many nodes at one address are lifted."""

    bootstrap: tuple[Address, ...]
    interface: str = ""
    port: int = 0
    read_only: bool = False

    @property
    def local(self) -> bool:
        return all(is_loopback(a.host) for a in self.bootstrap)

    @property
    def listen_host(self) -> str:
        if self.local:
            return "127.0.0.1"
        return self.interface or "0.0.0.0"  # noqa: S104 (the user's DHT, on their interfaces)


def session_settings(config: DhtConfig) -> dict[str, Any]:
    """libtorrent settings: DHT only, nothing on by default that sends anywhere."""
    import libtorrent as lt

    host = config.listen_host
    listen = f"[{host}]:{config.port}" if ":" in host else f"{host}:{config.port}"
    settings: dict[str, Any] = {
        "enable_dht": True,
        "dht_bootstrap_nodes": "",
        "enable_lsd": False,
        "enable_upnp": False,
        "enable_natpmp": False,
        "enable_ip_notifier": False,
        "listen_interfaces": listen,
        "outgoing_interfaces": "" if host in ("0.0.0.0", "::") else host,  # noqa: S104
        "dht_read_only": config.read_only,
        "aio_threads": 1,
        "hashing_threads": 1,
        "alert_mask": int(lt.alert_category.dht | lt.alert_category.error),
    }
    if config.local:  # many nodes at 127.0.0.1: libtorrent would keep one, or ban them
        settings |= {
            "dht_restrict_routing_ips": False,
            "dht_restrict_search_ips": False,
            "dht_ignore_dark_internet": False,
            "dht_prefer_verified_node_ids": False,
            "dht_block_ratelimit": 100_000,
            "dht_upload_rate_limit": 1_000_000,
        }
    return settings


class RecordCache:
    """The newest verified record seen per key: an older one offered later is ignored."""

    def __init__(self) -> None:
        self._records: dict[bytes, pkarr.SignedRecord] = {}

    def offer(self, record: pkarr.SignedRecord) -> pkarr.SignedRecord:
        """The record to use for its key: ``record`` unless a newer one is held."""
        held = self._records.get(record.public)
        if held is None or record.newer_than(held):
            self._records[record.public] = record
            return record
        return held

    def get(self, public: bytes) -> pkarr.SignedRecord | None:
        return self._records.get(public)


@dataclass
class _Get:
    queue: asyncio.Queue[tuple[int, bytes, Any, bool]]
    loop: asyncio.AbstractEventLoop


@dataclass
class Dht:
    """One libtorrent session joined to the DHT of ``config.bootstrap``."""

    config: DhtConfig
    cache: RecordCache = field(default_factory=RecordCache)
    session: Any = None
    nodes: int = 0
    last_put: PutResult | None = None
    _gets: dict[bytes, list[_Get]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pump: threading.Thread | None = None
    _closing: bool = False
    _krpc: Krpc | None = None  # the put socket, open while the session runs

    def __repr__(self) -> str:
        return f"Dht({len(self.config.bootstrap)} bootstrap node(s), local={self.config.local})"

    async def start(self) -> None:
        await asyncio.to_thread(self._start)

    def _start(self) -> None:
        import libtorrent as lt

        settings: Any = session_settings(self.config)  # a dict, as the bindings take it
        self.session = lt.session(settings)
        for address in self.config.bootstrap:
            self.session.add_dht_node((address.host, address.port))
        self._pump = threading.Thread(target=self._alerts, name="pk-dht", daemon=True)
        self._pump.start()

    @property
    def port(self) -> int:
        return int(self.session.listen_port()) if self.session is not None else 0

    def _alerts(self) -> None:
        """libtorrent's alerts, read on this thread (an alert is gone at the next pop)."""
        import libtorrent as lt

        while not self._closing:
            self.session.wait_for_alert(200)
            for alert in self.session.pop_alerts():
                if isinstance(alert, lt.dht_mutable_item_alert):
                    item = (alert.seq, bytes(alert.signature), alert.item, alert.authoritative)
                    with self._lock:
                        waiting = list(self._gets.get(bytes(alert.key), ()))
                    for get in waiting:
                        get.loop.call_soon_threadsafe(get.queue.put_nowait, item)
                elif isinstance(alert, lt.dht_stats_alert):
                    self.nodes = sum(int(b.get("num_nodes", 0)) for b in alert.routing_table)

    async def get(self, public: bytes, timeout: float = GET_TIMEOUT_S) -> pkarr.SignedRecord | None:
        """The newest verified record for ``public``: the DHT's answers until its lookup is
        done, or GRACE_S after the first that verifies (the lookup's last answers wait on
        nodes that left), weighed against the cache. None if nothing verifies in ``timeout``."""
        if self.session is None:
            return None
        await self._joined(timeout)
        get = _Get(asyncio.Queue(), asyncio.get_running_loop())
        with self._lock:
            self._gets.setdefault(public, []).append(get)
        best: pkarr.SignedRecord | None = None
        try:
            self.session.dht_get_mutable_item(public, b"")
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            with contextlib.suppress(TimeoutError):
                while True:
                    async with asyncio.timeout_at(deadline):
                        seq, signature, item, done = await get.queue.get()
                    record = verified(public, seq, signature, item)
                    if record is not None:
                        if best is None:  # a little longer, for a newer one
                            deadline = min(deadline, loop.time() + GRACE_S)
                        best = self.cache.offer(record)
                    if done:
                        break
        finally:
            with self._lock:
                self._gets[public].remove(get)
                if not self._gets[public]:
                    del self._gets[public]
        return best if best is not None else self.cache.get(public)

    async def _joined(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until the routing table holds a node: a lookup made
        before, from an empty table, ends at once with nothing."""
        deadline = time.monotonic() + timeout
        while not self.nodes and time.monotonic() < deadline and self.session is not None:
            self.session.post_dht_stats()
            await asyncio.sleep(JOIN_POLL_S)

    def seeds(self) -> list[tuple[str, int]]:
        """Where a put's lookup starts: this session's own DHT node, then the bootstrap list."""
        own = []
        if self.session is not None and self.port:
            host = self.config.listen_host
            own = [("127.0.0.1" if host in ("0.0.0.0", "::") else host, self.port)]  # noqa: S104
        return own + [(a.host, a.port) for a in self.config.bootstrap]

    async def put(self, record: pkarr.SignedRecord) -> PutResult:
        """Store this node's ``record`` (never while read-only)."""
        if self.config.read_only:
            raise InvalidInput("this DHT session is read-only (--no-publish)")
        seeds = await asyncio.to_thread(resolve_seeds, self.seeds())
        if self._krpc is None:
            self._krpc = await Krpc(self.config.listen_host, local=self.config.local).__aenter__()
        self.last_put = await self._krpc.put(record, seeds)
        self.cache.offer(record)
        return self.last_put

    def status(self) -> dict[str, Any]:
        if self.session is not None:
            self.session.post_dht_stats()  # the count arrives by alert, for the next status
        return {
            "bootstrap": [str(a) for a in self.config.bootstrap],
            "nodes": self.nodes,
            "read_only": self.config.read_only,
            **({"port": self.port} if self.session is not None else {}),
            **({"put": self.last_put.result} if self.last_put is not None else {}),
        }

    async def close(self) -> None:
        self._closing = True
        if self._krpc is not None:
            await self._krpc.__aexit__()
            self._krpc = None
        if self._pump is not None:
            await asyncio.to_thread(self._pump.join, 2.0)
        self.session = None  # libtorrent's destructor stops the session


def verified(public: bytes, seq: int, signature: bytes, item: Any) -> pkarr.SignedRecord | None:
    """A DHT answer as a verified record, or None (no item, or it does not verify)."""
    if not isinstance(item, bytes) or not item or not 0 < seq < 2**63:
        return None
    payload = signature + seq.to_bytes(pkarr.TIMESTAMP_BYTES, "big") + item
    try:
        return pkarr.from_relay_payload(public, payload)
    except pkarr.BadRecord as exc:
        log.info("the DHT gave a bad record: %s", exc.detail)
        return None


def resolve_seeds(seeds: Sequence[tuple[str, int]]) -> list[tuple[str, int]]:
    """Bootstrap names as IPv4 endpoints (KRPC's compact form is IPv4 here)."""
    import socket

    out: list[tuple[str, int]] = []
    for host, port in seeds:
        try:
            ipaddress.IPv4Address(host)
            out.append((host, port))
            continue
        except ValueError:
            pass
        with contextlib.suppress(OSError):
            for info in socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM):
                out.append((str(info[4][0]), int(info[4][1])))
    return list(dict.fromkeys(out))


class ByDht:
    """Resolution through the DHT: the node's own record, the newest seen."""

    how = "dht"

    def __init__(self, dht: Dht) -> None:
        self.dht = dht

    async def find(self, node_id: NodeId) -> Found | None:
        started = time.monotonic()
        record = await self.dht.get(bytes(node_id))
        if record is None:
            return None
        log.info("found in the DHT in %.0f ms", (time.monotonic() - started) * 1000)
        relays = relays_of(record.relays)  # a node behind NAT may name relays and no address
        return Found(node_id, record.addresses, self.how, "mainline DHT", relays=relays)
