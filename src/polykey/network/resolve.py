"""Resolution: where a NodeId is, by several strategies run at once, the first answer winning.

A strategy is anything with a ``how`` (``lan``, ``relay``, ``dht``, ``peer``) and an async ``find``
returning what it found or None. ``Resolver.find`` starts them all, takes the first that
answers with addresses, and cancels the rest; a strategy that fails (an exception) counts as
no answer and is logged. Nothing here authenticates: the SSH host key pin does when the
address is dialled (docs/spec/discovery.md section 5). The node graph, the first strategy, is
read by ``Peers`` on its own thread before any of these start (it answers at once); asking
peers (the connected ones, then the seeds: ``peer``) is network/seeds.py's ``AskSeeds``.

``Discovery`` is the other half, an agent's: publishing its own record (relays, the DHT,
the LAN) and building the resolver its Peers use (section 6).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from polykey.ids import NodeId
from polykey.network.graph import Address

if TYPE_CHECKING:
    from polykey.crypto.signing import SigningKey
    from polykey.network.dht import Dht
    from polykey.network.relay import RelaySpec
    from polykey.network.relays import Relays

log = logging.getLogger("polykey.network")

RESOLVE_TIMEOUT_S = 6.0  # all strategies together (each has its own, shorter, limit)


@dataclass(frozen=True)
class Found:
    """Where a node is: its addresses (preferred first), how that was learnt (``cache`` for
    the node graph, ``lan``, ``relay``, ``dht``, ``peer``), and from where (a relay's URL, the graph
    entry's own ``how``, ...); and the relays it is registered with, which its record names (a
    node behind NAT may name relays and no address)."""

    node_id: NodeId
    addresses: tuple[Address, ...]
    how: str
    source: str = ""
    at: str = ""
    relays: tuple[RelaySpec, ...] = ()


def relays_of(named: Sequence[str]) -> tuple[RelaySpec, ...]:
    """The relays a record names (``NODEID@HOST:PORT``, checked when it was read)."""
    if not named:
        return ()
    from polykey.network.relay import parse_relay

    return tuple(parse_relay(text) for text in named)


class Strategy(Protocol):
    how: str

    async def find(self, node_id: NodeId) -> Found | None: ...


class Resolver:
    def __init__(self, strategies: Sequence[Strategy], timeout: float = RESOLVE_TIMEOUT_S):
        self.strategies = tuple(strategies)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"Resolver({', '.join(s.how for s in self.strategies)})"

    def __bool__(self) -> bool:
        return bool(self.strategies)

    async def find(self, node_id: NodeId) -> Found | None:
        """The first answer of any strategy, or None when none answers in time."""
        if not self.strategies:
            return None
        tasks = [asyncio.create_task(self._one(s, node_id)) for s in self.strategies]
        try:
            async with asyncio.timeout(self.timeout):
                for done in asyncio.as_completed(tasks):
                    found = await done
                    if found is not None:
                        return found
        except TimeoutError:
            log.info("resolution timed out after %.1f s", self.timeout)
        finally:
            for task in tasks:
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.gather(*tasks, return_exceptions=True)
        return None

    @staticmethod
    async def _one(strategy: Strategy, node_id: NodeId) -> Found | None:
        try:
            found = await strategy.find(node_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # one strategy failing must not stop the others
            log.info("resolution by %s failed: %s", strategy.how, type(exc).__name__)
            return None
        if found is None or found.node_id != node_id:
            return None
        if not found.addresses and not found.relays:
            return None
        return found


class ByRelays:
    """Pkarr relays: the node's own signed record (network/relays.py)."""

    how = "relay"

    def __init__(self, relays: Relays) -> None:
        self.relays = relays

    async def find(self, node_id: NodeId) -> Found | None:
        answer = await self.relays.resolve(bytes(node_id))
        if answer is None:
            return None
        relay, record = answer
        return Found(node_id, record.addresses, self.how, relay, relays=relays_of(record.relays))


def dht_for(bootstrap: Sequence[Address], interface: str, *, read_only: bool) -> Dht | None:
    """A DHT session for these bootstrap nodes, or None: none given (the default: nothing is
    sent to the DHT), or libtorrent not installed (then the relays alone are used)."""
    if not bootstrap:
        return None
    from polykey.network import dht

    if not dht.available():
        log.warning("libtorrent is not installed: the DHT is off (pip install polykey[dht])")
        return None
    host = "" if interface.startswith(LOOPBACK) or interface in WILDCARD else interface
    return dht.Dht(dht.DhtConfig(tuple(bootstrap), host, read_only=read_only))


RETRY_S = 5.0  # a record nothing took: published again after this, doubling
REPUBLISH_S = 300.0  # Iroh's; records vanish from the DHT unless republished
ADDRESS_CHECK_S = 30.0  # how often a wildcard host's addresses are looked at again
LOOPBACK = ("127.", "::1", "localhost")
WILDCARD = ("0.0.0.0", "::", "")  # noqa: S104 (names of wildcards, nothing is bound)


class Discovery:
    """An agent's discovery: its record published to the relays and the DHT (unless
    ``publish`` is off) and announced on the LAN (if ``lan``), again every REPUBLISH_S and at
    once when its addresses change; and the resolver its Peers use. A loopback-only agent
    announces and publishes nothing. Timestamps always grow, even if the clock steps back."""

    def __init__(
        self,
        key: SigningKey,
        relays: Relays,
        *,
        publish: bool,
        lan: bool,
        public: Sequence[Address] = (),
        dht: Dht | None = None,
    ) -> None:
        self.key = key
        self.dht = dht
        self.public = tuple(public)[:5]  # --public-address: published as given
        self.relays = relays
        self.publish = publish
        self.lan = lan
        self.host = ""
        self.port = 0
        self.zc: Any = None
        self.announcer: Any = None
        self.addresses: tuple[Address, ...] = ()
        self.via: tuple[str, ...] = ()  # the relays this node is registered with: published
        self.published_via: tuple[str, ...] = ()
        self.last_timestamp = 0
        self.outcomes: list[dict[str, Any]] = []
        self.published_at = ""

    def __repr__(self) -> str:
        return f"Discovery(publish={self.publish}, lan={self.lan}, {self.relays!r}, {self.dht!r})"

    def current_addresses(self) -> tuple[Address, ...]:
        from polykey.network.mdns import lan_addresses

        if self.public:
            return self.public
        if not self.port or self.host.startswith(LOOPBACK):
            return ()
        hosts = lan_addresses() if self.host in WILDCARD else [self.host]
        return tuple(Address(h, self.port) for h in hosts[:5])

    async def start(self, host: str, port: int) -> None:
        """Begin serving (the peer port is bound, or 0: finding others only): join the DHT if
        one is configured, open mDNS if the agent is on a LAN."""
        self.host, self.port = host, port
        if self.dht is not None:
            try:
                await self.dht.start()
            except Exception as exc:  # relays and the LAN still work
                log.warning("the DHT could not start: %s", type(exc).__name__)
                self.dht = None
        if self.lan and not host.startswith(LOOPBACK) and self.current_addresses():
            from polykey.network.mdns import Announcer, open_zeroconf

            wildcard = host in WILDCARD
            self.zc = await asyncio.to_thread(open_zeroconf, None if wildcard else host)
            self.announcer = Announcer(self.zc, port)

    def resolver(self) -> Resolver:
        strategies: list[Strategy] = []
        if self.zc is not None:
            from polykey.network.mdns import ByLan

            strategies.append(ByLan(self.zc))
        if self.relays:
            strategies.append(ByRelays(self.relays))
        if self.dht is not None:
            from polykey.network.dht import ByDht

            strategies.append(ByDht(self.dht))
        return Resolver(strategies)

    async def run(self) -> None:
        """Publish now, then whenever the addresses or relays change or REPUBLISH_S has
        passed. A loopback agent registered with a relay publishes the relay alone. A record
        that nothing took (every relay limited, in conflict or unreachable, no DHT node
        storing it) is published again after RETRY_S, doubling up to REPUBLISH_S; a relay's
        Retry-After is kept by the relay list itself (network/relays.py)."""
        loop = asyncio.get_running_loop()
        due, retry = 0.0, RETRY_S
        while True:
            addresses = await asyncio.to_thread(self.current_addresses)
            changed = addresses != self.addresses or self.via != self.published_via
            if (addresses or self.via) and (changed or loop.time() >= due):
                try:
                    taken = await self.announce(addresses)
                except Exception as exc:  # the next round tries again
                    log.warning("publishing the record failed: %s", type(exc).__name__)
                    taken = False
                if taken:
                    due, retry = loop.time() + REPUBLISH_S, RETRY_S
                else:
                    due, retry = loop.time() + retry, min(retry * 2, REPUBLISH_S)
            await asyncio.sleep(min(ADDRESS_CHECK_S, max(0.5, due - loop.time())))

    async def announce(self, addresses: tuple[Address, ...]) -> bool:
        """Sign and announce this node's record; True when something took it (a relay, a DHT
        node, or nothing to publish to: the LAN only). A relay or DHT node that holds a newer
        record of this key (one signed before a restart, at a clock since stepped back) is
        answered at once with a record stamped after it."""
        taken, newer = await self._announce(addresses)
        if newer is not None and newer >= self.last_timestamp:
            log.info("a newer record of this node is held: signing again after it")
            self.last_timestamp = newer
            taken, _ = await self._announce(addresses)
        return taken

    async def _announce(self, addresses: tuple[Address, ...]) -> tuple[bool, int | None]:
        """Announce once: whether it was taken, and the timestamp of a newer record of this
        key held where it was refused as older (None: no such refusal)."""
        from polykey.network import pkarr

        stamp = max(pkarr.now_us(), self.last_timestamp + 1)
        via = self.via
        record = pkarr.sign(self.key, addresses, stamp, via)  # never empty: refused there
        self.last_timestamp, self.addresses, self.published_via = stamp, addresses, via
        if self.announcer is not None:
            await self.announcer.announce(record)
        if not self.publish or (not self.relays and self.dht is None):
            return True, None
        taken, conflict = False, False
        if self.relays:
            outcomes = await self.relays.publish(record)
            self.outcomes = [
                {"relay": o.relay, "result": o.result}
                | ({"retry_after": o.retry_after} if o.retry_after is not None else {})
                for o in outcomes
            ]
            self.published_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            log.info("record published: %s", ", ".join(o.result for o in outcomes))
            taken = any(o.stored for o in outcomes)
            conflict = any(o.result == "conflict" for o in outcomes)
        if self.dht is not None and not self.dht.config.read_only:
            put = await self.dht.put(record)
            self.published_at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
            log.info(
                "record put in the DHT: %s on %d of %d node(s)", put.result, put.stored, put.asked
            )
            taken = taken or put.stored > 0
            conflict = conflict or put.newer > 0
        elif self.dht is not None:
            taken = taken or not self.relays  # read-only: nothing of it to take
        return taken, (await self._held_newer() if conflict else None)

    async def _held_newer(self) -> int | None:
        """The timestamp of this key's record held by the relays or the DHT (verified as
        signed by this key), if it is not older than the last one signed here."""
        public = self.key.public
        stamps: list[int] = []
        if self.relays:
            found = await self.relays.resolve(public)
            if found is not None:
                stamps.append(found[1].timestamp)
        if self.dht is not None:
            record = await self.dht.get(public)
            if record is not None:
                stamps.append(record.timestamp)
        newest = max(stamps, default=None)
        return newest if newest is not None and newest >= self.last_timestamp else None

    def status(self) -> dict[str, Any]:
        return {
            "publish": bool(self.publish and (self.relays or self.dht is not None)),
            "relays": list(self.relays.urls),
            "dht": self.dht.status() if self.dht is not None else None,
            "lan": self.announcer is not None,
            "addresses": [str(a) for a in self.addresses],
            **({"via": list(self.published_via)} if self.published_via else {}),
            **(
                {"published": self.outcomes, "published_at": self.published_at}
                if self.published_at
                else {}
            ),
        }

    async def close(self) -> None:
        if self.dht is not None:
            with contextlib.suppress(Exception):
                await self.dht.close()
        if self.announcer is not None:
            with contextlib.suppress(Exception):
                await self.announcer.close()
        if self.zc is not None:
            await asyncio.to_thread(self.zc.close)
            self.zc = None
