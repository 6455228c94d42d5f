"""Known nodes and their addresses: mutable namespace ``nodes/graph``.

An entry is the address of a NodeId, how it came (``manual``: `pk nodes add`; ``lan``,
``relay``, ``peer``: found by discovery, docs/spec/discovery.md) and when. The discovery
settings (the Pkarr relays, the DHT bootstrap list) live in the same namespace under keys
starting with ``@``, which no NodeId does.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass

from polykey.errors import InvalidInput, NodeDamaged, PolykeyError
from polykey.ids import NodeId, encode_node_id
from polykey.store.nodefile import NodeFile, Transaction
from polykey.store.records import Namespace

GRAPH = Namespace("nodes/graph")
RELAYS_KEY = b"@relays"
DHT_BOOTSTRAP_KEY = b"@dht-bootstrap"
MANUAL = "manual"
HOW = frozenset({MANUAL, "lan", "relay", "dht", "peer"})


class UnknownNode(PolykeyError):
    """This node has no address for that NodeId."""

    exit_code = 52
    hint = "Add it with `pk nodes add NODEID HOST:PORT`."


@dataclass(frozen=True)
class Address:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_address(text: str) -> Address:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidInput(
            f"not a HOST:PORT address: {text[:80]!r}", hint="For example 127.0.0.1:1314."
        )
    return Address(host, int(port))


@dataclass(frozen=True)
class Entry:
    address: Address
    how: str = MANUAL  # manual, lan, relay or peer
    at: str = ""  # when it was stored (UTC, ISO 8601); "" for entries older than the field


class Graph:
    def __init__(self, store: NodeFile) -> None:
        self.store = store

    def add(self, node_id: NodeId, address: Address, how: str = MANUAL) -> None:
        if how not in HOW:
            raise ValueError(f"unknown way of finding a node: {how!r}")
        at = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        with self.store.write() as tx:
            doc = {"host": address.host, "port": address.port, "how": how, "at": at}
            tx.put(GRAPH, encode_node_id(node_id).encode(), json.dumps(doc).encode())

    def remove(self, node_id: NodeId) -> bool:
        key = encode_node_id(node_id).encode()
        with self.store.write() as tx:
            found = tx.get(GRAPH, key) is not None
            tx.delete(GRAPH, key)
        return found

    def move(self, tx: Transaction, old: NodeId, new: NodeId) -> None:
        """Within ``tx``: ``old`` renewed its key and is ``new`` now (trust/rotation.py): its
        address is kept for ``new`` (unless ``new`` has one), and ``old`` is forgotten."""
        raw = tx.get(GRAPH, encode_node_id(old).encode())
        if raw is None:
            return
        if tx.get(GRAPH, encode_node_id(new).encode()) is None:
            tx.put(GRAPH, encode_node_id(new).encode(), raw)
        tx.delete(GRAPH, encode_node_id(old).encode())

    def get(self, node_id: NodeId) -> Address:
        return self.entry(node_id).address

    def entry(self, node_id: NodeId) -> Entry:
        raw = self.store.get(GRAPH, encode_node_id(node_id).encode())
        if raw is None:
            raise UnknownNode(encode_node_id(node_id))
        return _decode(raw)

    def knows(self, node_id: NodeId) -> bool:
        return self.store.get(GRAPH, encode_node_id(node_id).encode()) is not None

    def all(self) -> dict[str, Address]:
        return {k: e.address for k, e in self.entries().items()}

    def entries(self) -> dict[str, Entry]:
        return {
            k.decode(): _decode(v) for k, v in self.store.items(GRAPH) if not k.startswith(b"@")
        }

    def relays(self) -> list[str]:
        """The Pkarr relays this node publishes to and looks nodes up in (none by default)."""
        raw = self.store.get(GRAPH, RELAYS_KEY)
        if raw is None:
            return []
        try:
            urls = json.loads(raw)["relays"]
            if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise NodeDamaged("the relay list record is malformed") from None
        return list(urls)

    def set_relays(self, urls: Sequence[str]) -> None:
        self._set_list(RELAYS_KEY, "relays", urls)

    def dht_bootstrap(self) -> list[str]:
        """The Mainline DHT nodes an agent joins from (``HOST:PORT`` or ``mainline``, as
        network/dht.py checked them); none by default: no DHT."""
        raw = self.store.get(GRAPH, DHT_BOOTSTRAP_KEY)
        if raw is None:
            return []
        try:
            entries = json.loads(raw)["bootstrap"]
            if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            raise NodeDamaged("the DHT bootstrap list record is malformed") from None
        return list(entries)

    def set_dht_bootstrap(self, entries: Sequence[str]) -> None:
        self._set_list(DHT_BOOTSTRAP_KEY, "bootstrap", entries)

    def _set_list(self, key: bytes, field: str, values: Sequence[str]) -> None:
        with self.store.write() as tx:
            if values:
                tx.put(GRAPH, key, json.dumps({field: list(values)}).encode())
            else:
                tx.delete(GRAPH, key)


def _decode(raw: bytes) -> Entry:
    try:
        doc = json.loads(raw)
        how = str(doc.get("how", MANUAL))
        if how not in HOW:
            raise ValueError
        return Entry(Address(str(doc["host"]), int(doc["port"])), how, str(doc.get("at", "")))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise NodeDamaged("a node address record is malformed") from None
