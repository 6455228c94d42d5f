"""Known nodes and their addresses (`pk nodes add`): mutable namespace ``nodes/graph``."""

from __future__ import annotations

import json
from dataclasses import dataclass

from polykey.errors import InvalidInput, NodeDamaged, PolykeyError
from polykey.ids import NodeId, encode_node_id
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace

GRAPH = Namespace("nodes/graph")


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


class Graph:
    def __init__(self, store: NodeFile) -> None:
        self.store = store

    def add(self, node_id: NodeId, address: Address) -> None:
        with self.store.write() as tx:
            doc = {"host": address.host, "port": address.port}
            tx.put(GRAPH, encode_node_id(node_id).encode(), json.dumps(doc).encode())

    def remove(self, node_id: NodeId) -> bool:
        key = encode_node_id(node_id).encode()
        with self.store.write() as tx:
            found = tx.get(GRAPH, key) is not None
            tx.delete(GRAPH, key)
        return found

    def get(self, node_id: NodeId) -> Address:
        raw = self.store.get(GRAPH, encode_node_id(node_id).encode())
        if raw is None:
            raise UnknownNode(encode_node_id(node_id))
        return _decode(raw)

    def knows(self, node_id: NodeId) -> bool:
        return self.store.get(GRAPH, encode_node_id(node_id).encode()) is not None

    def all(self) -> dict[str, Address]:
        return {k.decode(): _decode(v) for k, v in self.store.items(GRAPH)}


def _decode(raw: bytes) -> Address:
    try:
        doc = json.loads(raw)
        return Address(str(doc["host"]), int(doc["port"]))
    except (ValueError, KeyError, TypeError):
        raise NodeDamaged("a node address record is malformed") from None
