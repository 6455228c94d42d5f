"""The agent's face to other nodes: the peer port, discovery, reachability, the port mapping.

:class:`AgentPeering` serves peers over SSH (peer methods on the node thread, punches on the
loop, stock git clients on git threads through :class:`_GitStream`), publishes this node's
record and resolves others' (docs/spec/discovery.md), registers with a relay, asks the seeds
how they see this node, maps the port on the router, and after a key renewal serves all of it
again with the new key.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from polykey.agent.jobs import AgentJobs
from polykey.agent.methods import audit as recorded
from polykey.errors import PolykeyError
from polykey.ids import encode_node_id

log = logging.getLogger("polykey.agent")

GIT_WRITE_CHUNK = 256 * 1024
PUNCH_METHODS = frozenset({"punch.ask", "punch.offer"})  # network/punch.py, on the loop
GIT_MIN_RATE = 1024  # bytes/s a stock git client must keep up while we wait on it


class _GitStream:
    """A stock git client's SSH channel as the blocking recv/write dulwich's handlers use (in a
    git thread), bridged to the event loop. git writes many tiny pkt-lines: they are sent in
    large writes. A client must speak and read within ``idle`` seconds, and must not trickle:
    once it has been waited on for ``idle`` seconds in all, it must have moved GIT_MIN_RATE
    bytes for each second waited."""

    def __init__(self, proc: Any, loop: asyncio.AbstractEventLoop, idle: float) -> None:
        self.proc, self.loop, self.idle = proc, loop, idle
        self.pending = bytearray()
        self.waited = 0.0
        self.moved = 0

    def _paced(self, started: float, count: int) -> None:
        self.waited += time.monotonic() - started
        self.moved += count
        if self.waited > self.idle and self.moved < GIT_MIN_RATE * self.waited:
            raise TimeoutError("the git client is too slow")

    async def send(self, data: bytes) -> None:
        self.proc.stdout.write(data)
        await asyncio.wait_for(self.proc.stdout.drain(), self.idle)  # a client must read

    def flush(self) -> None:
        if self.pending:
            data = bytes(self.pending)
            self.pending.clear()
            started = time.monotonic()
            asyncio.run_coroutine_threadsafe(self.send(data), self.loop).result()
            self._paced(started, len(data))

    def recv(self, n: int) -> bytes:
        self.flush()  # what was written must reach the client before we wait for it
        started = time.monotonic()
        read = asyncio.wait_for(self.proc.stdin.read(n), self.idle)  # a client must speak
        data: bytes = asyncio.run_coroutine_threadsafe(read, self.loop).result()
        self._paced(started, len(data))
        return data

    def write(self, data: bytes) -> None:
        self.pending.extend(data)
        if len(self.pending) >= GIT_WRITE_CHUNK:
            self.flush()

    async def finish(self) -> None:
        """In the loop, once the git thread is done: send what it left."""
        if self.pending:
            await self.send(bytes(self.pending))


class AgentPeering(AgentJobs):
    """The agent's peer port and discovery; :class:`Agent` starts and stops them."""

    async def _serve_peers(self, host: str, port: int) -> None:
        from polykey.network.ssh import PeerLimits, serve, ssh_key
        from polykey.sync.server import PeerService

        node = self.node
        service = PeerService(node.vaults, node.acl, node.node_id, node.notifications, node.graph)
        service.audit = node.audit  # every peer request recorded (docs/spec/audit.md)
        service.notified = self._notified  # a child node's parent: its chain taken at once
        self.peer_service = service  # made again after a renewal, open connections included
        loop = asyncio.get_running_loop()
        idle = self.peer_idle

        async def handle(peer: Any, method: str, params: dict[str, Any]) -> dict[str, Any]:
            log.info("peer %s: %s", encode_node_id(peer), method)
            if method in PUNCH_METHODS and self.puncher is not None:  # on this loop
                result: dict[str, Any] = await self.puncher.handle(peer, method, params)
                return result
            serve = self.peer_service.handle
            return await loop.run_in_executor(self.worker, serve, peer, method, params)

        from polykey.sync.gitserve import serve_receive_pack, serve_upload_pack
        from polykey.vaults.registry import Vaults

        git_vaults = Vaults(self.node.store, self.node.key)  # its own cache: another thread

        def receive(*args: Any) -> dict[str, Any]:  # a git push lands where node writes run
            result: dict[str, Any] = self.worker.submit(self.peer_service.receive, *args).result()
            return result

        async def git(peer: Any, kind: str, path: str, proc: Any) -> None:
            log.info("peer %s: %s", encode_node_id(peer), kind)
            await loop.run_in_executor(self.worker, recorded.record_git, node, peer, kind, path)

            stream = _GitStream(proc, loop, idle)
            args = (git_vaults, node.acl, peer, path, stream.recv, stream.write)
            if kind == "git-receive-pack":
                run = self.git_worker
                outcome = await loop.run_in_executor(run, serve_receive_pack, *args, receive)
                for line in outcome:
                    log.info("peer %s: git push %s", encode_node_id(peer), line)
            else:
                await loop.run_in_executor(self.git_worker, serve_upload_pack, *args)
            await stream.finish()

        key = ssh_key(self.node.key.signing.openssh_private_pem())
        if self.peer_limits is None:  # after a renewal, the same: it counts what is still open
            self.peer_limits = PeerLimits()
        if self.relay_serving and self.relay is None:  # kept too: its registrations stay
            from polykey.network.relay import RATE, Relay

            self.relay = Relay(self.peer_limits, rate=self.relay_rate or RATE)
        service.relay = self.relay
        await loop.run_in_executor(self.worker, self._known_peers)
        self.peer_server = await serve(
            host, port, key, handle, git, self.peer_limits, idle, relay=self.relay
        )
        from polykey.network.punch import Puncher
        from polykey.network.ssh import serve_socket
        from polykey.network.sshserver import serve_relayed

        async def accept(sock: Any) -> Any:  # a punched socket (network/punch.py)
            return await serve_socket(sock, key, handle, git, self.peer_limits, idle)

        async def relayed(conn: Any, name: str, port: int) -> Any:  # network/relay.py
            return await serve_relayed(conn, name, port, key, handle, git, self.peer_limits, idle)

        self.serve_relayed = relayed

        self.puncher = Puncher(key, accept, host=host, relay=self.relay)
        if self.relay is not None:
            self.relay.punch = self.puncher
        log.info("serving peers on %s:%d", host, port)

    async def _renewed(self) -> None:
        """After `keys.renew`: peers served (host key, service), the record published and
        announced, the relay registration and the status file, all with the new key. When
        that fails, the agent stops rather than serve with the old key."""
        try:
            await self._serve_renewed()
        except Exception as exc:
            log.error("serving the renewed key failed (%s): the agent stops", type(exc).__name__)
            if self.stopping is not None:
                self.stopping.set()

    async def _serve_renewed(self) -> None:
        self.node.peers.set_waiter(self.worker.wait)  # the Node's Peers are new
        if self.puncher is not None:  # its punches under way and the connections it
            await self.puncher.close()  # punched, all under the old host key
        if self.peer_server is not None and self.peer_port is not None:
            self.peer_server.close()  # new connections: the new host key; open ones: the
            await self.peer_server.wait_closed()  # new service (self.peer_service)
            self.peer_server = None
            await self._serve_peers(self.peer_host, self.peer_port)
        if self.discovery is not None:
            self.discovery.key = self.node.key.signing
            self.node.peers.set_resolver(self.discovery.resolver())
            if self.discovery.addresses:
                with contextlib.suppress(Exception):  # its next round publishes again
                    await self.discovery.announce(self.discovery.addresses)
        else:
            await self._start_discovery()
        await self._stop_reach()
        await self._start_reach()
        if self.portmap is not None and self.portmap.mapping is not None:
            await self._mapped(self.portmap.mapping)  # the new record and Reachability
        self.runtime.write_status(self.status())
        log.info("serving with the renewed key %s", encode_node_id(self.node.node_id))

    async def _start_discovery(self) -> None:
        """Publish and announce this node, and let its Peers resolve by the same means."""
        from polykey.network.relays import Relays
        from polykey.network.resolve import ByRelays, Discovery, Resolver, dht_for

        dht = dht_for(self.dht_bootstrap, self.peer_host, read_only=not self.publish)
        if self.peer_port is None and dht is None:  # only finding others, by the relays given
            if self.relay_urls:
                self.node.peers.set_resolver(Resolver([ByRelays(Relays(self.relay_urls))]))
            return
        loop = asyncio.get_running_loop()
        urls = self.relay_urls
        if urls is None:
            urls = await loop.run_in_executor(self.worker, self.node.graph.relays)
        relays = Relays(urls)
        discovery = Discovery(
            self.node.key.signing,
            relays,
            publish=self.publish,
            lan=self.lan,
            public=self.public_addresses,
            dht=dht,
        )
        try:
            await discovery.start(self.peer_host, self.peer_port or 0)
        except Exception as exc:  # no LAN announcements; relays still work
            log.warning("mDNS could not start: %s", type(exc).__name__)
            discovery.lan = False
        self.discovery = discovery
        self.node.peers.set_resolver(discovery.resolver())

    async def _start_reach(self) -> None:
        """Register with the relay (--via-relay, else the node's home relay) and ask the seeds
        how they see this node (network/reach.py)."""
        from polykey.network.reach import Reachability, registration_target
        from polykey.network.relay import Registrar

        loop = asyncio.get_running_loop()
        peers = self.node.peers
        via = self.via_relay
        if via is None and self.peer_port is not None:
            via = await loop.run_in_executor(self.worker, peers.reach.home_relay)
        registrar = None
        if via is not None and self.peer_port is not None:
            key = peers._ssh_key()
            local = registration_target(self.peer_host, self.peer_port)
            serve = self.serve_relayed  # relayed connections served on the registration
            registrar = Registrar(key, self.node.node_id, via, local, serve)
            if self.discovery is not None:  # its record names the relay (discovery.md 9)
                self.discovery.via = (str(via),)
        seeds = await loop.run_in_executor(self.worker, peers.reach.seeds)

        async def probe() -> list[dict[str, str]]:
            return await loop.run_in_executor(self.worker, _observed_by_seeds, peers)

        self.reach = Reachability(
            host=self.peer_host,
            port=self.peer_port,
            public=self.public_addresses,
            relay=self.relay,
            registrar=registrar,
        )
        self.reach.start(probe if seeds else None)

    async def _stop_reach(self) -> None:
        if self.reach is not None:
            await self.reach.close()

    def _start_portmap(self) -> None:
        """--map-port: map the peer port on the router in the background (network/portmap.py);
        the agent starts at once, and publishes the mapped address once the router answers."""
        from polykey.network.portmap import PortMapper

        if not self.map_port or self.peer_port is None:
            return
        self.portmap = PortMapper(self.peer_port, host=self.peer_host)
        self.portmap_task = asyncio.create_task(self.portmap.run(self._mapped))

    async def _mapped(self, mapping: Any) -> None:
        """The mapped address (or none any more): first in the published record, before the
        addresses published without it, and what `reach` shows."""
        public = tuple(self.public_addresses)
        if self.reach is not None:
            self.reach.public = public if mapping is None else (mapping.external, *public)
        discovery = self.discovery
        if discovery is None:
            return
        discovery.public = public
        if mapping is not None:
            others = await asyncio.to_thread(discovery.current_addresses)
            others = tuple(a for a in others if a != mapping.external)
            discovery.public = (mapping.external, *others)[:5]
        addresses = await asyncio.to_thread(discovery.current_addresses)
        self.runtime.write_status(self.status())
        if addresses:
            await discovery.announce(addresses)

    async def _stop_discovery(self) -> None:
        """The port mapping deleted (bounded: about a second), then discovery closed, and
        the punches under way (network/punch.py) stopped."""
        if self.puncher is not None:
            await self.puncher.close()
        if self.portmap_task is not None:
            self.portmap_task.cancel()
            with contextlib.suppress(BaseException):
                await self.portmap_task
        if self.portmap is not None:
            await self.portmap.close()
        if self.discovery is not None:
            await self.discovery.close()

    async def relays_changed(self, urls: list[str]) -> None:
        """`pk nodes relays set` while the agent runs: use and publish to the new list now."""
        from polykey.network.relays import Relays

        if self.discovery is None or self.relay_urls is not None:
            return  # not serving peers, or the list given at start (PK_PKARR_RELAYS) rules
        self.discovery.relays = Relays(urls)
        self.node.peers.set_resolver(self.discovery.resolver())
        if self.discovery.addresses:
            await self.discovery.announce(self.discovery.addresses)


def _observed_by_seeds(peers: Any) -> list[dict[str, str]]:
    """Each seed that answers: how it sees this node (on the node thread: seeds are read from
    the node file, and DNS seeds looked up)."""
    from polykey.ids import encode_node_id as text_of

    seen = []
    for seed in peers.seed_nodes(fresh=True):
        try:
            seen.append({"seed": text_of(seed.node_id), "address": peers.observed(seed)})
        except PolykeyError as exc:
            log.info("seed %s did not answer: %s", text_of(seed.node_id), type(exc).__name__)
    return seen
