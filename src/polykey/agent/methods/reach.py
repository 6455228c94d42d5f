"""Room `reach`: the seeds this node asks, and the relay it registers with
(docs/spec/discovery.md sections 9 and 10). Kept in the node file; an agent running uses them
for finding nodes at once, and registers with a new home relay when it starts again."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS
from polykey.errors import InvalidInput

if TYPE_CHECKING:
    from polykey.node import Node


@dataclass(frozen=True)
class NodesSeeds:
    add: list[str] = field(default_factory=list, repr=False)  # NODEID@HOST:PORT or DOMAIN
    remove: list[str] = field(default_factory=list, repr=False)
    nameserver: str = ""  # for the domains added: HOST[:PORT] asked instead of the system's


@METHODS.method("nodes.seeds")
def nodes_seeds(node: Node, p: NodesSeeds) -> dict[str, Any]:
    """The seeds; ``add`` and ``remove`` change them first."""
    from polykey.network.seeds import parse_seed

    reach = node.peers.reach
    seeds = reach.seeds()
    if p.add or p.remove:
        gone = {str(parse_seed(t)).split(" ")[0] for t in p.remove}
        missing = gone - {str(s).split(" ")[0] for s in seeds}
        if missing:
            raise InvalidInput(f"no such seed: {sorted(missing)[0][:120]}")
        kept = [s for s in seeds if str(s).split(" ")[0] not in gone]
        for text in p.add:
            seed = parse_seed(text, p.nameserver)
            kept = [s for s in kept if str(s).split(" ")[0] != str(seed).split(" ")[0]]
            kept.append(seed)
        reach.set_seeds(kept)
        seeds = kept
    return {"seeds": [str(s) for s in seeds]}


@dataclass(frozen=True)
class HomeRelay:
    relay: str | None = None  # NODEID@HOST:PORT; "" clears it; None only reads it


@METHODS.method("nodes.home_relay")
def nodes_home_relay(node: Node, p: HomeRelay) -> dict[str, Any]:
    """The relay this node registers with when its agent serves peers (none by default)."""
    from polykey.network.relay import parse_relay

    reach = node.peers.reach
    if p.relay is not None:
        reach.set_home_relay(parse_relay(p.relay) if p.relay else None)
    current = reach.home_relay()
    return {"relay": str(current) if current is not None else None}
