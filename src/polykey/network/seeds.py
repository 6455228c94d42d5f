"""Seed nodes, the relays a node is reached through, and asking peers where a node is
(docs/spec/discovery.md section 10).

A seed is a node dialled to learn things: where another node is (the peer method
``nodes.find``) and how this node is seen from outside (``peer.observed``). Seeds are given as
``NODEID@HOST:PORT`` or as a domain whose DNS SRV records ``_polykey._tcp.DOMAIN`` name them,
each SRV target carrying a TXT record ``"v=1" "node=NODEID"`` and an address (A or AAAA). None
is configured by default: nothing is dialled until one is.

The settings are kept in the node graph's namespace under keys starting with ``@`` (which no
NodeId does, so the graph's listing skips them): ``@seeds``, ``@home-relay`` (the relay this
node registers with) and ``@via/<NodeId>`` (the relays another node was last reached through).
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from polykey.errors import InvalidInput, InvalidNodeId, NodeDamaged
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import GRAPH, Address, parse_address
from polykey.network.relay import RelaySpec, parse_relay
from polykey.store.nodefile import NodeFile

SEEDS_KEY = b"@seeds"
HOME_RELAY_KEY = b"@home-relay"
VIA_PREFIX = b"@via/"
SRV_LABEL = "_polykey._tcp"
MAX_SEEDS = 16  # seeds kept (each domain counts once)
MAX_SRV_TARGETS = 8  # seeds taken from one domain
MAX_RELAYS = 3  # relays kept for one node
DNS_TIMEOUT_S = 3.0


class SeedUnusable(InvalidInput):
    """That is not a seed: NODEID@HOST:PORT or a domain is needed."""

    hint = "For example vab1...@203.0.113.7:1314, or example.org (its _polykey._tcp SRV)."


@dataclass(frozen=True)
class Seed:
    node_id: NodeId
    address: Address
    source: str = ""  # the domain whose SRV named it, if any

    def __str__(self) -> str:
        return f"{encode_node_id(self.node_id)}@{self.address}"


@dataclass(frozen=True)
class DnsSeed:
    domain: str
    nameserver: str = ""  # HOST[:PORT] asked instead of the system's resolvers

    def __str__(self) -> str:
        return f"{SRV_LABEL}.{self.domain}" + (
            f" (via {self.nameserver})" if self.nameserver else ""
        )


def parse_seed(text: str, nameserver: str = "") -> Seed | DnsSeed:
    text = text.strip()
    if "@" in text:
        try:
            spec = parse_relay(text)
        except InvalidInput:
            raise SeedUnusable(repr(text[:120])) from None
        return Seed(spec.node_id, spec.address)
    domain = text.lower().rstrip(".").removeprefix(SRV_LABEL + ".")
    labels = domain.split(".")
    if len(domain) > 253 or not all(
        0 < len(lab) < 64 and lab.replace("-", "").replace("_", "").isalnum() and lab.isascii()
        for lab in labels
    ):
        raise SeedUnusable(repr(text[:120]))
    if nameserver:
        _nameserver(nameserver)
    return DnsSeed(domain, nameserver)


def _nameserver(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "")
    if sep and not (port.isdigit() and 0 < int(port) < 65536):
        raise InvalidInput(f"{text[:80]!r} is not HOST[:PORT]")
    return (host if sep else text), (int(port) if sep else 53)


# --- kept settings ---------------------------------------------------------------------------


class Reach:
    """The reachability settings kept in the node file."""

    def __init__(self, store: NodeFile) -> None:
        self.store = store

    def seeds(self) -> list[Seed | DnsSeed]:
        doc = self._get(SEEDS_KEY)
        out: list[Seed | DnsSeed] = []
        try:
            for item in doc.get("seeds", []):
                if "domain" in item:
                    out.append(DnsSeed(str(item["domain"]), str(item.get("nameserver", ""))))
                else:
                    out.append(
                        Seed(decode_node_id(item["node_id"]), parse_address(item["address"]))
                    )
        except (KeyError, TypeError, AttributeError, InvalidInput, InvalidNodeId):
            raise NodeDamaged("the seed list record is malformed") from None
        return out

    def set_seeds(self, seeds: Sequence[Seed | DnsSeed]) -> None:
        if len(seeds) > MAX_SEEDS:
            raise InvalidInput(f"at most {MAX_SEEDS} seeds")
        items = [
            {"domain": s.domain, **({"nameserver": s.nameserver} if s.nameserver else {})}
            if isinstance(s, DnsSeed)
            else {"node_id": encode_node_id(s.node_id), "address": str(s.address)}
            for s in seeds
        ]
        self._put(SEEDS_KEY, {"seeds": items} if items else None)

    def home_relay(self) -> RelaySpec | None:
        doc = self._get(HOME_RELAY_KEY)
        if not doc:
            return None
        try:
            return parse_relay(str(doc["relay"]))
        except (KeyError, InvalidInput):
            raise NodeDamaged("the home relay record is malformed") from None

    def set_home_relay(self, relay: RelaySpec | None) -> None:
        self._put(HOME_RELAY_KEY, {"relay": str(relay)} if relay is not None else None)

    def relays_of(self, node_id: NodeId) -> list[RelaySpec]:
        """The relays ``node_id`` was last reached through (or was told to be behind)."""
        doc = self._get(VIA_PREFIX + encode_node_id(node_id).encode())
        try:
            return [parse_relay(str(r)) for r in doc.get("relays", [])][:MAX_RELAYS]
        except (InvalidInput, TypeError):
            raise NodeDamaged("a relay record of a node is malformed") from None

    def keep_relays(self, node_id: NodeId, relays: Sequence[RelaySpec]) -> None:
        unique = list(dict.fromkeys(str(r) for r in relays))[:MAX_RELAYS]
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        doc = {"relays": unique, "at": at} if unique else None
        self._put(VIA_PREFIX + encode_node_id(node_id).encode(), doc)

    def _get(self, key: bytes) -> dict[str, Any]:
        raw = self.store.get(GRAPH, key)
        if raw is None:
            return {}
        try:
            doc = json.loads(raw)
        except ValueError:
            raise NodeDamaged("a discovery setting record is malformed") from None
        if not isinstance(doc, dict):
            raise NodeDamaged("a discovery setting record is malformed")
        return doc

    def _put(self, key: bytes, doc: dict[str, Any] | None) -> None:
        with self.store.write() as tx:
            if doc is None:
                tx.delete(GRAPH, key)
            else:
                tx.put(GRAPH, key, json.dumps(doc).encode())


# --- DNS SRV seeds ---------------------------------------------------------------------------


def srv_seeds(seed: DnsSeed, timeout: float = DNS_TIMEOUT_S) -> list[Seed]:
    """The seeds the SRV records of ``seed``'s domain name (blocking: dnspython), in SRV order
    (priority, then weight); a target without a NodeId TXT or an address is skipped. [] when
    the domain answers nothing."""
    import dns.exception
    import dns.resolver

    resolver = dns.resolver.Resolver(configure=not seed.nameserver)
    if seed.nameserver:
        host, port = _nameserver(seed.nameserver)
        resolver.nameservers, resolver.port = [host], port
    resolver.lifetime = timeout

    def ask(name: str, kind: str) -> list[Any]:
        try:
            return list(resolver.resolve(name, kind))
        except (dns.exception.DNSException, OSError, ValueError):
            return []

    records = sorted(
        ask(f"{SRV_LABEL}.{seed.domain}.", "SRV"), key=lambda r: (r.priority, -r.weight)
    )
    out: list[Seed] = []
    for record in records[:MAX_SRV_TARGETS]:
        target = record.target.to_text()
        node_id = _node_of(ask(target, "TXT"))
        hosts = [r.address for r in ask(target, "A")] or [r.address for r in ask(target, "AAAA")]
        if node_id is not None and hosts:
            out.append(Seed(node_id, Address(hosts[0], int(record.port)), seed.domain))
    return out


def _node_of(txts: list[Any]) -> NodeId | None:
    for txt in txts:
        strings = [bytes(s).decode("ascii", "replace") for s in txt.strings]
        if strings[:1] != ["v=1"]:
            continue
        for s in strings[1:]:
            if s.startswith("node="):
                try:
                    return decode_node_id(s[5:])
                except InvalidNodeId:
                    return None
    return None


def expand(seeds: Sequence[Seed | DnsSeed]) -> list[Seed]:
    """Every seed, the DNS ones looked up now (blocking)."""
    out: list[Seed] = []
    for seed in seeds:
        out.extend(srv_seeds(seed) if isinstance(seed, DnsSeed) else [seed])
    return list({(s.node_id, s.address): s for s in out}.values())


# --- asking peers ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Told:
    """What a peer said of a node: its addresses and the relays it is reached through."""

    seed: Seed
    addresses: tuple[Address, ...]
    relays: tuple[RelaySpec, ...]


def told(seed: Seed, reply: dict[str, Any]) -> Told:
    """A ``nodes.find`` reply, checked; what does not parse is dropped. A relay without an
    address is the seed itself, where it was reached."""
    addresses: list[Address] = []
    relays: list[RelaySpec] = []
    for text in list(reply.get("addresses") or [])[:5]:
        try:
            addresses.append(parse_address(str(text)))
        except InvalidInput:
            continue
    for item in list(reply.get("relays") or [])[:MAX_RELAYS]:
        try:
            relay_id = decode_node_id(str(item.get("node_id")))
            where = str(item.get("address") or "")
            address = parse_address(where) if where else seed.address
        except (InvalidInput, InvalidNodeId, AttributeError):
            continue
        if where or relay_id == seed.node_id:
            relays.append(RelaySpec(relay_id, address))
    return Told(seed, tuple(addresses), tuple(relays))


class AskSeeds:
    """A resolution strategy (network/resolve.py's ``Strategy``): the seeds are asked
    ``nodes.find`` one after another (each call blocks a worker thread, not the loop) until one
    names an address. Relays they name are handed to ``relays_found`` on the way."""

    how = "peer"

    def __init__(
        self,
        ask: Callable[[NodeId], list[Told]],
        relays_found: Callable[[NodeId, list[RelaySpec]], None],
    ) -> None:
        self.ask = ask
        self.relays_found = relays_found

    def __repr__(self) -> str:
        return "AskSeeds()"

    async def find(self, node_id: NodeId) -> Any:
        from polykey.network.resolve import Found

        answers = await asyncio.to_thread(self.ask, node_id)
        relays = [r for t in answers for r in t.relays]
        if relays:
            self.relays_found(node_id, relays)
        for answer in answers:
            if answer.addresses:
                return Found(
                    node_id, answer.addresses, self.how, encode_node_id(answer.seed.node_id)
                )
        return None
