"""Reaching another node by its NodeId: the one way every room of this node talks to a peer.

``Peers`` resolves a NodeId to an address, dials it with this node's key over the node's pool
of SSH connections, and runs one call or a whole session on a channel. The SSH host key pin is
the authentication: a wrong address can only fail, never reach another node.

Resolution (docs/spec/discovery.md section 5): the node graph first (`pk nodes add`, or an
address found before); when it has none, the discovery strategies run at once (the agent sets
them with ``set_resolver``; without an agent, the relays configured in the node), each found
address is dialled in turn, and the one that answers is kept in the graph with how it was
found. A found address that stops answering is looked up again once; a hand-added one never
is replaced. The peers this node is connected to now, and the seeds (network/seeds.py) if
any, are asked too (``nodes.find``), in that order.

When no address answers, the node is reached through a relay (network/relay.py): the relays
discovery or a seed named for it, else those it was last reached through. Through each, a
direct connection is punched first (network/punch.py: the relay carries the signalling only),
and the relay carries the connection itself when that fails. The SSH host key pin is the
authentication there too: the relay can only fail to deliver.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from polykey.errors import InvalidInput
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import MANUAL, Address, Graph, UnknownNode

if TYPE_CHECKING:
    from polykey.network.pool import Pool, Waiter
    from polykey.network.punch import Punched
    from polykey.network.relay import RelaySpec, Tunnels
    from polykey.network.resolve import Found, Resolver
    from polykey.network.seeds import Reach, Seed, Told
    from polykey.network.ssh import PeerClient
    from polykey.network.sshlib import asyncssh

T = TypeVar("T")

ASK_CONNECTED = 8  # connected peers asked where a node is, before the seeds
SEEDS_FRESH_S = 300.0  # how long the seeds named by DNS are used before they are looked up again

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
        self._tunnels: Tunnels | None = None
        self._punched: Punched | None = None
        self.punching = True  # try a punched connection before relaying one
        self._hints: dict[bytes, list[RelaySpec]] = {}  # relays named while resolving
        self._seeds: tuple[float, list[Seed]] | None = None  # the seeds, DNS ones looked up

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
        """The agent's strategies, else the Pkarr relays configured in the node, if any; and
        asking the seeds, if any."""
        from polykey.network.resolve import Resolver

        base = self._resolver
        if base is None:
            urls = self.graph.relays()
            if urls:
                from polykey.network.relays import Relays
                from polykey.network.resolve import ByRelays

                base = Resolver([ByRelays(Relays(urls))])
        if not self.reach.seeds() and not self.pool.connections():
            return base
        from polykey.network.seeds import AskSeeds

        strategies = [
            *(base.strategies if base is not None else ()),
            AskSeeds(self.ask_seeds, self._hint),
        ]
        return Resolver(strategies) if base is None else Resolver(strategies, base.timeout)

    @property
    def reach(self) -> Reach:
        from polykey.network.seeds import Reach

        return Reach(self.graph.store)

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
            relays = tuple(self.reach.relays_of(node_id))
            return Found(node_id, (entry.address,), "cache", entry.how, entry.at, relays)
        found = self.discover(node_id)
        self._hints.pop(bytes(node_id), None)
        if found.addresses:
            self.graph.add(node_id, found.addresses[0], found.how)
        if found.relays:  # reached through them, when its addresses do not answer
            self.reach.keep_relays(node_id, list(found.relays))
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
        if found is not None and found.relays:  # a record naming the node's relays
            self._hint(node_id, list(found.relays))
        hinted = self._hints.get(bytes(node_id))
        if found is None and hinted:  # a seed named relays, and no address
            from polykey.network.resolve import Found as Told

            source = encode_node_id(hinted[0].node_id)
            found = Told(node_id, (), "peer", source, relays=tuple(dict.fromkeys(hinted)))
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
        """Run ``run`` on a channel to ``node_id`` (several calls in one session): on the
        punched connection held to it, else at its address, else through each of its relays
        in turn: a connection punched with the relay's help, else one the relay carries."""
        local = self._local.get(bytes(node_id))
        if local is not None:
            import asyncio

            from polykey.network.local import LocalClient

            client = LocalClient(node_id, *local)
            return asyncio.run(run(client))  # type: ignore[arg-type]
        from polykey.network.ssh import PeerUnreachable

        self._hints.pop(bytes(node_id), None)
        if self._punched is not None and self._punched.holds(node_id):
            with contextlib.suppress(PeerUnreachable):  # it broke: the usual order
                return self._on_punched(node_id, run)
        try:
            return self._direct(node_id, run)
        except (PeerUnreachable, UnknownNode) as exc:
            relays = self._relays_for(node_id)
            if not relays:
                raise
            failure: Exception = exc
        for relay in relays:
            if self.punching and self._punch(node_id, relay):
                try:
                    result = self._on_punched(node_id, run)
                except PeerUnreachable as exc:  # it broke: the relay carries it instead
                    failure = exc
                except BaseException:  # reached, then the call failed
                    self._keep_relay(node_id, relay)
                    raise
                else:
                    self._keep_relay(node_id, relay)
                    return result
            try:
                result = self._via(node_id, relay, run)
            except PeerUnreachable as exc:
                failure = exc
                continue
            except BaseException:  # reached through it, then the call failed
                self._keep_relay(node_id, relay)
                raise
            self._keep_relay(node_id, relay)
            return result
        raise failure

    def _direct(self, node_id: NodeId, run: Callable[[PeerClient], Awaitable[T]]) -> T:
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

    # --- relays and seeds (network/relay.py, network/seeds.py) ---------------------------

    def _hint(self, node_id: NodeId, relays: list[RelaySpec]) -> None:
        self._hints.setdefault(bytes(node_id), []).extend(relays)

    def _relays_for(self, node_id: NodeId) -> list[RelaySpec]:
        """The relays to try for ``node_id``: named while resolving it, else those it was last
        reached through, else those the seeds name now."""
        relays = self._hints.pop(bytes(node_id), None) or self.reach.relays_of(node_id)
        if not relays and self.reach.seeds():
            relays = [r for told in self.ask_seeds(node_id) for r in told.relays]
        return list({str(r): r for r in relays}.values())

    def _keep_relay(self, node_id: NodeId, relay: RelaySpec) -> None:
        kept = self.reach.relays_of(node_id)
        if kept[:1] != [relay]:
            self.reach.keep_relays(node_id, [relay, *kept])

    def _via(
        self, node_id: NodeId, relay: RelaySpec, run: Callable[[PeerClient], Awaitable[T]]
    ) -> T:
        import asyncio

        if self._tunnels is None:
            from polykey.network.relay import Tunnels

            self._tunnels = Tunnels()
        loop = self.pool._ensure_loop()
        work = self._tunnels.run(self._ssh_key(), node_id, relay, run)
        result: T = self.pool.waiter(asyncio.run_coroutine_threadsafe(work, loop))
        return result

    def _punch(self, node_id: NodeId, relay: RelaySpec) -> bool:
        """Whether a punched connection to ``node_id`` is open, one tried with ``relay``'s
        help if none is (network/punch.py)."""
        import asyncio

        from polykey.network.punch import Punched
        from polykey.network.relay import Tunnels

        tunnels = self._tunnels = self._tunnels or Tunnels()
        punched = self._punched = self._punched or Punched()
        key = self._ssh_key()
        work = punched.ensure(key, node_id, relay, lambda: tunnels.relay_connection(key, relay))
        future = asyncio.run_coroutine_threadsafe(work, self.pool._ensure_loop())
        return bool(self.pool.waiter(future))

    def _on_punched(self, node_id: NodeId, run: Callable[[PeerClient], Awaitable[T]]) -> T:
        import asyncio

        assert self._punched is not None
        future = asyncio.run_coroutine_threadsafe(
            self._punched.run(node_id, run), self.pool._ensure_loop()
        )
        result: T = self.pool.waiter(future)
        return result

    def seed_nodes(self, *, fresh: bool = False) -> list[Seed]:
        """The seeds, those named by DNS looked up (kept SEEDS_FRESH_S)."""
        import time

        from polykey.network.seeds import expand

        if fresh or self._seeds is None or time.monotonic() - self._seeds[0] > SEEDS_FRESH_S:
            self._seeds = (time.monotonic(), expand(self.reach.seeds()))
        return self._seeds[1]

    def connected(self) -> list[Seed]:
        """The peers this node holds an SSH connection to now (newest use first), as they are
        asked where a node is: each at the address it is connected at."""
        from polykey.network.graph import parse_address
        from polykey.network.seeds import Seed

        out: list[Seed] = []
        for c in sorted(self.pool.connections(), key=lambda c: float(c["idle_s"])):
            try:
                out.append(Seed(decode_node_id(c["node_id"]), parse_address(c["address"])))
            except InvalidInput:  # InvalidNodeId and a bad address alike
                continue
        return out[:ASK_CONNECTED]

    def ask_seeds(self, node_id: NodeId) -> list[Told]:
        """Ask the peers connected now, then the seeds, where ``node_id`` is, one after another
        until one names an address (blocking; each is reached at its own address, the
        connected ones over the connection held, never resolved)."""
        from polykey.network.seeds import Told, told
        from polykey.network.ssh import PeerError, PeerUnreachable

        wanted = {"node_id": encode_node_id(node_id)}

        async def ask(client: PeerClient) -> dict[str, Any]:
            return await client.call("nodes.find", wanted)

        answers: list[Told] = []
        others = [s for s in self.connected() if s.node_id != node_id]  # not where it is now
        asked = {(s.node_id, s.address): s for s in [*others, *self.seed_nodes()]}
        for seed in asked.values():
            if seed.node_id == node_id:
                return [Told(seed, (seed.address,), ())]
            try:
                answers.append(told(seed, self._dial(seed.node_id, seed.address, ask)))
            except (PeerUnreachable, PeerError):
                continue
            if answers[-1].addresses:
                break
        return answers

    def observed(self, seed: Seed) -> str:
        """How ``seed`` sees this node: HOST:PORT (its answer to ``peer.observed``)."""

        async def ask(client: PeerClient) -> dict[str, Any]:
            return await client.call("peer.observed", {})

        return str(self._dial(seed.node_id, seed.address, ask).get("address", ""))[:100]

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
        held = self._pool.connections() if self._pool is not None else []
        held += self._punched.connections() if self._punched is not None else []
        return held + (self._tunnels.connections() if self._tunnels is not None else [])

    def close(self) -> None:
        if self._pool is not None:
            import asyncio

            loop = self.pool._ensure_loop()
            for kept in (self._punched, self._tunnels):
                if kept is not None:
                    with contextlib.suppress(Exception):
                        asyncio.run_coroutine_threadsafe(kept.close(), loop).result(timeout=5)
        self._punched = self._tunnels = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def _ssh_key(self) -> asyncssh.SSHKey:
        if self._key is None:
            from polykey.network.ssh import ssh_key

            self._key = ssh_key(self._private_pem())
        return self._key
