"""Reaching another node by its NodeId: the one way every room of this node talks to a peer.

``Peers`` resolves a NodeId to an address, dials it with this node's key over the node's pool
of SSH connections, and runs one call or a whole session on a channel. The SSH host key pin is
the authentication: a wrong address can only fail, never reach another node.

Resolution (docs/spec/discovery.md section 5): the node graph first (`pk nodes add`, or an
address found before); when it has none, the discovery strategies run at once (the agent sets
them with ``set_resolver``; without an agent, the relays configured in the node), each found
address is dialled in turn, and the one that answers is kept in the graph with how it was
found. A found address that stops answering is looked up again once; a hand-added one never
is replaced.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from polykey.ids import NodeId, encode_node_id
from polykey.network.graph import MANUAL, Address, Graph, UnknownNode

if TYPE_CHECKING:
    import asyncssh

    from polykey.network.pool import Pool, Waiter
    from polykey.network.resolve import Found, Resolver
    from polykey.network.ssh import PeerClient

T = TypeVar("T")

Serve = Callable[[NodeId, str, dict[str, Any]], dict[str, Any]]
"""A node served in this process: (the caller's NodeId, method, params) -> result."""


class Peers:
    """One node's way to its peers; made by the Node, which owns it."""

    def __init__(self, graph: Graph, private_pem: Callable[[], bytes]) -> None:
        self.graph = graph
        self._private_pem = private_pem
        self._key: asyncssh.SSHKey | None = None
        self._pool: Pool | None = None
        self._waiter: Waiter | None = None
        self._local: dict[bytes, tuple[NodeId, Serve]] = {}
        self._resolver: Resolver | None = None

    def __repr__(self) -> str:
        return f"Peers({len(self.connections())} connected)"

    @property
    def pool(self) -> Pool:
        if self._pool is None:  # asyncssh is imported only when a peer is reached
            from polykey.network.pool import Pool, block

            self._pool = Pool(self._waiter or block)
        return self._pool

    def set_waiter(self, waiter: Waiter) -> None:
        """How a caller waits on the network: the agent's waiter lets its node thread serve
        other requests while one of them waits on a peer (agent/worker.py)."""
        self._waiter = waiter
        if self._pool is not None:
            self._pool.waiter = waiter

    def set_resolver(self, resolver: Resolver | None) -> None:
        """The discovery strategies to run when the graph has no address (the agent's)."""
        self._resolver = resolver

    def resolver(self) -> Resolver | None:
        """The agent's strategies; else the Pkarr relays configured in the node, if any."""
        if self._resolver is not None:
            return self._resolver
        urls = self.graph.relays()
        if not urls:
            return None
        from polykey.network.relays import Relays
        from polykey.network.resolve import ByRelays, Resolver

        return Resolver([ByRelays(Relays(urls))])

    def resolve(self, node_id: NodeId) -> Address:
        """Where ``node_id`` is reached: the graph's address, else the first found by
        discovery (not dialled, not kept); UnknownNode when nothing says."""
        if self.graph.knows(node_id):
            return self.graph.get(node_id)
        return self.discover(node_id).addresses[0]

    def find(self, node_id: NodeId, *, fresh: bool = False) -> Found:
        """Where ``node_id`` is and how that is known: the graph (``cache``) unless ``fresh``,
        else discovery, whose answer (signed by the node, or seen on the LAN) is kept."""
        from polykey.network.resolve import Found

        if not fresh and self.graph.knows(node_id):
            entry = self.graph.entry(node_id)
            return Found(node_id, (entry.address,), "cache", entry.how, entry.at)
        found = self.discover(node_id)
        self.graph.add(node_id, found.addresses[0], found.how)
        return found

    def discover(self, node_id: NodeId) -> Found:
        """Run the discovery strategies at once; the first answer. UnknownNode if none."""
        import asyncio

        resolver = self.resolver()
        if not resolver:
            raise UnknownNode(encode_node_id(node_id))
        loop = self.pool._ensure_loop()  # the pool's loop thread runs every network wait
        future = asyncio.run_coroutine_threadsafe(resolver.find(node_id), loop)
        found: Found | None = self.pool.waiter(future)
        if found is None:
            raise UnknownNode(
                encode_node_id(node_id),
                hint="Nothing answered for it (graph, LAN, relays). Add its address with "
                "`pk nodes add NODEID HOST:PORT`, or check that its agent publishes.",
            )
        return found

    def attach(self, node_id: NodeId, me: NodeId, serve: Serve) -> None:
        """Reach ``node_id`` in this process (a backup node opened from its file): the same
        methods, messages and checks as over SSH, without a socket; ``me`` is the NodeId the
        other node sees calling (this node's: both keys are held here)."""
        self._local[bytes(node_id)] = (me, serve)

    def detach(self, node_id: NodeId) -> None:
        self._local.pop(bytes(node_id), None)

    def session(self, node_id: NodeId, run: Callable[[PeerClient], Awaitable[T]]) -> T:
        """Run ``run`` on a channel to ``node_id`` (several calls in one session)."""
        local = self._local.get(bytes(node_id))
        if local is not None:
            import asyncio

            from polykey.network.local import LocalClient

            client = LocalClient(node_id, *local)
            return asyncio.run(run(client))  # type: ignore[arg-type]
        from polykey.network.ssh import PeerUnreachable as PeerUnreachableError

        if self.graph.knows(node_id):
            entry = self.graph.entry(node_id)
            try:
                return self._dial(node_id, entry.address, run)
            except PeerUnreachableError:
                if entry.how == MANUAL or not self.resolver():
                    raise
                stale: Address | None = entry.address  # found once; look again
        else:
            stale = None
        found = self.discover(node_id)
        failure: Exception | None = None
        for address in found.addresses:
            if address == stale:
                continue
            try:
                result = self._dial(node_id, address, run)
            except PeerUnreachableError as exc:
                failure = exc
                continue
            except BaseException:  # reached (its key answered), then the call failed
                self.graph.add(node_id, address, found.how)
                raise
            self.graph.add(node_id, address, found.how)
            return result
        raise failure or UnknownNode(encode_node_id(node_id), hint="It moved nowhere new.")

    def _dial(
        self, node_id: NodeId, address: Address, run: Callable[[PeerClient], Awaitable[T]]
    ) -> T:
        result: T = self.pool.run(self._ssh_key(), node_id, address.host, address.port, run)
        return result

    def call(self, node_id: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """One peer method on ``node_id``: its result, or PeerError / PeerUnreachable."""

        async def one(client: PeerClient) -> dict[str, Any]:
            return await client.call(method, params)

        return self.session(node_id, one)

    def hello(self, node_id: NodeId) -> dict[str, Any]:
        """The other node's hello (its protocol version and NodeId), reaching it if need be."""

        async def greet(client: PeerClient) -> dict[str, Any]:
            return dict(client.hello)

        return self.session(node_id, greet)

    def connections(self) -> list[dict[str, Any]]:
        return self._pool.connections() if self._pool is not None else []

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _ssh_key(self) -> asyncssh.SSHKey:
        if self._key is None:
            from polykey.network.ssh import ssh_key

            self._key = ssh_key(self._private_pem())
        return self._key
