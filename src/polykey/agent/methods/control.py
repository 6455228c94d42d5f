"""The methods that act on the agent itself, not on the node: its status, sessions, stopping,
and the password change (the agent holds the data key). The agent alone serves them
(agent/server.py, docs/spec/agent.md "Sessions"); they run on its event loop, handing the KDF
to the agent's KDF thread."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.errors import WrongPassword
from polykey.rpc import InvalidParams, NoParams, Registry

if TYPE_CHECKING:
    from polykey.agent.server import Agent
    from polykey.node import KdfCost


@dataclass(frozen=True)
class Caller:
    """A request to the agent: the agent, and the session token the request carried (checked
    before the method runs, unless the method is OPEN)."""

    agent: Agent
    token: str | None = field(repr=False)


CONTROL: Registry[Caller, Awaitable[dict[str, Any]]] = Registry()

OPEN = frozenset({"agent.status", "agent.unlock", "agent.lockall", "agent.stop"})
"""The methods that need no session: they reveal nothing secret (status), need the password
(unlock) or only take access away (lockall, stop)."""


@CONTROL.method("agent.status")
async def agent_status(c: Caller, p: NoParams) -> dict[str, Any]:
    # clients: CLI connections other than this one (a request of a killed CLI still counts until
    # the agent has answered it)
    clients = max(0, c.agent.connections - 1)
    return {**c.agent.status(), "sessions": len(c.agent.sessions), "clients": clients}


@dataclass(frozen=True)
class Unlock:
    password: str = field(repr=False)


@CONTROL.method("agent.unlock")
async def agent_unlock(c: Caller, p: Unlock) -> dict[str, Any]:
    """A new session token for the node's password."""
    verify = c.agent.node.store.verify_password
    loop = asyncio.get_running_loop()
    if not await loop.run_in_executor(c.agent.kdf_worker, verify, p.password.encode()):
        raise WrongPassword()
    return {"token": c.agent.sessions.issue()}


@CONTROL.method("agent.lock")
async def agent_lock(c: Caller, p: NoParams) -> dict[str, Any]:
    """Revoke the caller's own session."""
    assert c.token is not None  # a checked session
    return {"revoked": c.agent.sessions.revoke(c.token)}


@CONTROL.method("agent.lockall")
async def agent_lockall(c: Caller, p: NoParams) -> dict[str, Any]:
    return {"revoked": c.agent.sessions.revoke_all()}


@CONTROL.method("agent.stop")
async def agent_stop(c: Caller, p: NoParams) -> dict[str, Any]:
    """Stop soon after the answer is sent."""
    stopping = c.agent.stopping
    assert stopping is not None  # the agent serves
    asyncio.get_running_loop().call_later(0.05, stopping.set)
    return {"stopping": True}


@dataclass(frozen=True)
class ChangePassword:
    old_password: str = field(repr=False)
    new_password: str = field(repr=False)


@CONTROL.method("keys.password")
async def keys_password(c: Caller, p: ChangePassword) -> dict[str, Any]:
    """A new password, at the KDF cost the node file has now; the old one is checked first."""
    if not p.new_password:
        raise InvalidParams("keys.password: new_password must not be empty")
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(c.agent.kdf_worker, _change_password, c.agent, p)


def _change_password(agent: Agent, p: ChangePassword) -> dict[str, Any]:
    node = agent.node
    if not node.store.verify_password(p.old_password.encode()):
        raise WrongPassword()
    node.change_password(p.new_password.encode(), kdf=_kdf_cost(agent))
    return {"changed": True}


def _kdf_cost(agent: Agent) -> KdfCost:
    from polykey.node import KdfCost

    kdf = agent.node.store.header.kdf
    return KdfCost(kdf.memory_kib, kdf.iterations, kdf.lanes)


# --- discovery (docs/spec/discovery.md): agent methods, since they use its resolver ---------


@dataclass(frozen=True)
class NodesFind:
    node_id: str
    fresh: bool = False


@CONTROL.method("nodes.find")
async def nodes_find(c: Caller, p: NodesFind) -> dict[str, Any]:
    """Where a node is and how that is known (the graph, else discovery, which is kept)."""
    from polykey.ids import decode_node_id

    node_id = decode_node_id(p.node_id)
    loop = asyncio.get_running_loop()
    find = functools.partial(c.agent.node.peers.find, node_id, fresh=p.fresh)
    found = await loop.run_in_executor(c.agent.worker, find)
    return found_doc(p.node_id, found)


def found_doc(node_id: str, found: Any) -> dict[str, Any]:
    return {
        "node_id": node_id,
        "addresses": [str(a) for a in found.addresses],
        "how": found.how,
        "source": found.source,
        "at": found.at,
        "relays": [str(r) for r in getattr(found, "relays", ())],  # network/punch.py, relay.py
    }


@dataclass(frozen=True)
class NodesRelays:
    relays: list[str] | None = None  # None: only read the list


@CONTROL.method("nodes.relays")
async def nodes_relays(c: Caller, p: NodesRelays) -> dict[str, Any]:
    """The node's Pkarr relays; given a list, it replaces them (an empty list: none)."""
    from polykey.network.relays import check_relay_url

    graph = c.agent.node.graph
    loop = asyncio.get_running_loop()
    if p.relays is not None:
        urls = list(dict.fromkeys(check_relay_url(u) for u in p.relays))
        await loop.run_in_executor(c.agent.worker, graph.set_relays, urls)
        await c.agent.relays_changed(urls)
    current = await loop.run_in_executor(c.agent.worker, graph.relays)
    used = c.agent.relay_urls
    return {"relays": current, **({"in_use": used} if used is not None else {})}


@dataclass(frozen=True)
class NodesDhtBootstrap:
    bootstrap: list[str] | None = field(default=None, repr=False)  # None: only read the list


@CONTROL.method("nodes.dht_bootstrap")
async def nodes_dht_bootstrap(c: Caller, p: NodesDhtBootstrap) -> dict[str, Any]:
    """The node's DHT bootstrap list; given a list, it replaces it (an empty list: none). The
    agent keeps the list it started with: a new one is used from its next start."""
    from polykey.network.dht import bootstrap_entries

    graph = c.agent.node.graph
    loop = asyncio.get_running_loop()
    if p.bootstrap is not None:
        entries = bootstrap_entries(p.bootstrap) if p.bootstrap else []
        await loop.run_in_executor(c.agent.worker, graph.set_dht_bootstrap, entries)
    current = await loop.run_in_executor(c.agent.worker, graph.dht_bootstrap)
    return {"bootstrap": current, **c.agent.dht_in_use()}
