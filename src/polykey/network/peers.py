"""Reaching another node by its NodeId: the one way every room of this node talks to a peer.

``Peers`` resolves a NodeId to an address (today the node graph of `pk nodes add`; discovery
will add its strategies behind ``resolve``), dials it with this node's key over the node's pool
of SSH connections, and runs one call or a whole session on a channel. The SSH host key pin is
the authentication: a wrong address can only fail, never reach another node.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from polykey.ids import NodeId
from polykey.network.graph import Address, Graph

if TYPE_CHECKING:
    import asyncssh

    from polykey.network.pool import Pool, Waiter
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

    def resolve(self, node_id: NodeId) -> Address:
        """Where ``node_id`` is reached; UnknownNode when nothing says."""
        return self.graph.get(node_id)

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
        address = self.resolve(node_id)
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
