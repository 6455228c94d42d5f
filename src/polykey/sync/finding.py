"""The peer method that tells where a node is (docs/spec/discovery.md section 10).

``nodes.find``: what this node knows of a NodeId: its address in the node graph, the relays it
is reached through, and, on a relay, whether it is registered here (then the relay names
itself, with no address: "where you reached me"). A relay (an agent started with ``--relay``)
is the public rendezvous and answers any peer; another node answers only the nodes it deals
with (in its graph or granted a vault), so its graph does not leak to strangers. Nothing said
here authenticates anything: the SSH host key pin does when the address is dialled.

``peer.observed`` ("I see you as HOST:PORT") is answered by the transport itself
(network/ssh.py), which alone knows where the peer came from.

Registered in the one peer registry (sync/service.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from polykey.errors import PolykeyError
from polykey.ids import decode_node_id, encode_node_id
from polykey.network.seeds import Reach
from polykey.sync.service import PEER_METHODS, PeerCall


@dataclass(frozen=True)
class FindNode:
    node_id: str


@PEER_METHODS.method("nodes.find")
def nodes_find(c: PeerCall, p: FindNode) -> dict[str, Any]:
    target = decode_node_id(p.node_id)  # InvalidNodeId: one line
    service = c.service
    relay = service.relay
    answer: dict[str, Any] = {"node_id": p.node_id, "addresses": [], "relays": []}
    if relay is not None and relay.is_registered(target):
        answer["relays"].append({"node_id": encode_node_id(service.node_id), "address": ""})
    graph = service.graph
    if graph is None:
        return answer
    if relay is None:
        known = graph.knows(c.peer) or encode_node_id(c.peer) in service.acl.nodes()
        if not known:
            return answer
    if graph.knows(target):
        answer["addresses"] = [str(graph.get(target))]
    try:
        kept = Reach(service.store).relays_of(target)
    except PolykeyError:
        kept = []
    answer["relays"] += [
        {"node_id": encode_node_id(r.node_id), "address": str(r.address)} for r in kept
    ]
    return answer
