"""The agent process: holds the unlocked node and serves the CLI on a private Unix socket.

One asyncio loop accepts connections; every request is checked (frame size, JSON-RPC shape,
session token) before a node method runs, and node methods run one at a time on a worker thread
(the node file and its caches are shared). A bad frame closes only its own connection.

The node file stays one file a user can copy: once writes pause, the node thread checkpoints the
write-ahead log into the main file, and stopping empties it before the node is closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import datetime
import logging
import os
import resource
import signal
import socket
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from polykey import __version__
from polykey.agent import methods, protocol
from polykey.agent.methods import audit as recorded
from polykey.agent.methods import control
from polykey.agent.runtime import Runtime, check_private
from polykey.agent.sessions import SessionInvalid, Sessions
from polykey.agent.worker import NodeWorker
from polykey.errors import PolykeyError
from polykey.ids import encode_node_id
from polykey.node import Node

log = logging.getLogger("polykey.agent")
PR_SET_DUMPABLE = 4
OUTBOX_INTERVAL_S = 10.0
AUDIT_CHECKPOINT_S = 3600.0  # the audit log's head signed into the sigchain, if it moved
REDISCOVER_CHECK_S = 300.0  # trusted identities looked at (each rediscovered hourly)
# The write-ahead log is copied into the node file CHECKPOINT_IDLE_S after the last write, or
# CHECKPOINT_MAX_DELAY_S after the first one when writes never pause; checked every
# CHECKPOINT_POLL_S. A checkpoint a reader holds back is tried again at the next poll.
CHECKPOINT_POLL_S = 0.5
CHECKPOINT_IDLE_S = 1.0
CHECKPOINT_MAX_DELAY_S = 10.0


class AgentRunning(PolykeyError):
    """An agent is already running for this node."""

    exit_code = 40
    hint = "See it with `pk agent status`; stop it with `pk agent stop`."


class PortUnavailable(PolykeyError):
    """The agent cannot listen for other nodes on that address."""

    exit_code = 45
    hint = "Choose another --port (or --host), or stop what listens there."


def harden_process() -> None:
    """No core dumps, and (Linux) no ptrace attach or /proc/PID/mem reads by other processes."""
    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def peer_uid(sock: socket.socket | None) -> int | None:
    if sock is None or not hasattr(socket, "SO_PEERCRED"):
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return int(uid)


GIT_WRITE_CHUNK = 256 * 1024
KNOWN_PEERS_INTERVAL_S = 5.0  # how fresh the peer port's list of known NodeIds is
PUNCH_METHODS = frozenset({"punch.ask", "punch.offer"})  # network/punch.py, on the loop
# methods after which that list is made again at once (grants and the node graph)
CHANGES_PEERS = frozenset(
    {
        "vaults.share",
        "vaults.unshare",
        "vaults.rm",
        "vaults.clone",
        "nodes.add",
        "nodes.rm",
        "nodes.link",
        "nodes.unlink",
    }
)
GIT_THREADS = 4  # stock git clients served at once; a stalled one is cut off after peer_idle
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


class Agent:
    def __init__(self, node: Node, node_path: Path, runtime: Runtime, sessions: Sessions) -> None:
        self.node = node
        self.node_path = node_path
        self.runtime = runtime
        self.sessions = sessions
        self.since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
        self.worker = NodeWorker()
        node.peers.set_waiter(self.worker.wait)  # a wait on a peer: the node thread serves others
        self.kdf_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pk-kdf")
        self.git_worker = ThreadPoolExecutor(max_workers=GIT_THREADS, thread_name_prefix="pk-git")
        self.stopping: asyncio.Event | None = None
        self.connections = 0
        self.peer_host = "127.0.0.1"
        self.peer_port: int | None = None
        self.peer_server: Any = None
        self.peer_service: Any = None  # sync.server.PeerService once peers are served
        self.peer_limits: Any = None  # network.ssh.PeerLimits once peers are served
        self.sync_interval: float = 0
        self.sync_problems: dict[str, dict[str, str]] = {}  # vault -> its failing background sync
        self.peer_idle: float = 60  # a git client silent (or not reading) this long is cut off
        # discovery (docs/spec/discovery.md): relays None = the node's own list
        self.publish = True
        self.lan = True
        self.relay_urls: list[str] | None = None
        self.public_addresses: list[Any] = []  # network.graph.Address: --public-address
        self.dht_bootstrap: list[Any] = []  # network.graph.Address: PK_DHT_BOOTSTRAP; none: off
        self.discovery: Any = None  # network.resolve.Discovery once peers are served
        # relays and seeds (docs/spec/discovery.md sections 9, 10): --relay, --via-relay
        self.relay_serving = False
        self.relay_rate: int | None = None  # bytes per second per NodeId; None: the default
        self.via_relay: Any = None  # network.relay.RelaySpec; None: the node's home relay
        self.relay: Any = None  # network.relay.Relay once it serves as one
        self.puncher: Any = None  # network.punch.Puncher once peers are served
        self.reach: Any = None  # network.reach.Reachability
        self.map_port = False  # --map-port: NAT-PMP (docs/spec/discovery.md section 11)
        self.portmap: Any = None  # network.portmap.PortMapper while it runs
        self.portmap_task: asyncio.Task[None] | None = None

    async def _every(self, seconds: float, job: Any) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(seconds)
            try:
                await loop.run_in_executor(self.worker, job)
            except Exception as exc:
                log.warning("background %s failed: %s", job.__name__, type(exc).__name__)

    async def _checkpoints(self) -> None:
        """Copy the write-ahead log into the node file when writes pause (on the node thread,
        between jobs; a PASSIVE checkpoint never blocks a writer), so that the node file alone,
        copied by any means a few seconds after a write, holds that write."""
        loop = asyncio.get_running_loop()
        store = self.node.store
        pending_since: float | None = None
        while True:
            await asyncio.sleep(CHECKPOINT_POLL_S)
            written = store.written_at
            if written is None:
                pending_since = None
                continue
            now = time.monotonic()
            if pending_since is None:
                pending_since = now
            if now - written < CHECKPOINT_IDLE_S and now - pending_since < CHECKPOINT_MAX_DELAY_S:
                continue
            try:
                done = await loop.run_in_executor(self.worker, store.checkpoint)
            except Exception as exc:
                log.warning("checkpoint failed: %s", type(exc).__name__)
                done = False
            if done:
                pending_since = None

    def _final_checkpoint(self) -> None:
        """Before the node is closed: empty the write-ahead log (closing the last connection
        then deletes it), waiting a little for other readers of the file."""
        try:
            if not self.node.store.checkpoint(truncate=True):
                log.info("the write-ahead log stays: another process has the node file open")
        except Exception as exc:
            log.warning("final checkpoint failed: %s", type(exc).__name__)

    def _audit_checkpoint(self) -> None:
        done = recorded.checkpoint(self.node)
        if done is not None:
            log.info("audit log checkpoint: %d records", done["count"])

    def _outbox(self) -> None:
        delivered = self.node.notifications.deliver_outbox()
        if delivered:
            log.info("delivered %d queued notification(s)", delivered)
        for peer, how in self.node.tell_untold(time.time()).items():
            log.info("told %s of this node's renewal: %s", peer[:12], how)

    def _known_peers(self) -> None:
        """The NodeIds this node deals with, for the peer port's stranger quota, and those
        granted `push` somewhere, the only ones whose requests may be large."""
        from polykey.ids import decode_node_id

        if self.peer_limits is None:
            return
        granted = self.node.acl.nodes()
        pushing = self.node.acl.nodes("push")
        known, pushers = set(), set()
        for text in granted | set(self.node.graph.all()):
            with contextlib.suppress(PolykeyError):
                raw = bytes(decode_node_id(text))
                known.add(raw)
                if text in pushing:
                    pushers.add(raw)
        self.peer_limits.known = frozenset(known)
        self.peer_limits.pushers = frozenset(pushers)

    def _notified(self, peer: Any) -> None:
        """A notification was kept (on the node thread): one from this node's parent (a child
        node) makes it take the parent's chain, after the request is answered."""
        with contextlib.suppress(RuntimeError):  # the agent is stopping
            self.worker.submit(self._parent_chain, peer)

    def _parent_chain(self, sender: Any = None) -> None:
        """A child node takes its parent's chain again (a revocation counts at once)."""
        from polykey.child import refresh_parent

        try:
            if refresh_parent(self.node, sender):
                log.info("took the parent's sigchain")
        except PolykeyError as exc:
            log.info("could not take the parent's sigchain: %s", type(exc).__name__)

    def _sync(self) -> None:
        from polykey.sync.client import pull_many

        self._parent_chain()  # a child node: its parent's revocations, before its pulls
        names = [i.name for i in self.node.vaults.all() if i.origin]
        if not names:
            return
        for result in pull_many(self.node.vaults, self.node.peers, names):
            vault = str(result["vault"])
            if "error" in result:
                log.info("sync of %s refused", vault)
                if vault not in self.sync_problems:
                    self.sync_problems[vault] = {
                        "vault": vault,
                        "error": str(result["error"]),
                        "since": _now(),
                    }
                continue
            self.sync_problems.pop(vault, None)
            if result.get("updated"):
                log.info("sync: %s updated (%s)", vault, result.get("how", "fast-forward"))

    def _rediscover(self) -> None:
        """Trusted identities discovered over an hour ago are discovered again (Polykey's
        default), so a revoked link or a withdrawn proof stops counting."""
        import time

        from polykey.people import rediscover

        for identity in rediscover(self.node, time.time()):
            log.info("rediscovered %s", identity)

    def warnings(self, params: dict[str, Any]) -> list[str]:
        """What a command touching these vaults should be told: background syncs that fail."""
        if not self.sync_problems:
            return []
        named: set[str] = set()
        for key in ("vault", "name", "src_vault", "dst_vault"):
            if isinstance(params.get(key), str):
                named.add(params[key])
        for key in ("items", "vaults"):
            for item in params.get(key) or []:
                if isinstance(item, str):
                    named.add(item)
                elif isinstance(item, list) and item and isinstance(item[0], str):
                    named.add(item[0])
        return [
            f"background sync of {p['vault']} fails since {p['since']}: {p['error']} "
            f"(`pk vaults pull {p['vault']}` shows why)"
            for v, p in sorted(self.sync_problems.items())
            if v in named
        ]

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
        self.peer_limits = PeerLimits()
        if self.relay_serving:
            from polykey.network.relay import RATE, Relay

            self.relay = service.relay = Relay(self.peer_limits, rate=self.relay_rate or RATE)
        await loop.run_in_executor(self.worker, self._known_peers)
        self.peer_server = await serve(
            host, port, key, handle, git, self.peer_limits, idle, relay=self.relay
        )
        from polykey.network.punch import Puncher
        from polykey.network.ssh import serve_socket

        async def accept(sock: Any) -> Any:  # a punched socket (network/punch.py)
            return await serve_socket(sock, key, handle, git, self.peer_limits, idle)

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
            registrar = Registrar(key, self.node.node_id, via, local)
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

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "node_id": encode_node_id(self.node.node_id),
            "node": str(self.node_path),
            "socket": str(self.runtime.socket_path),
            "since": self.since,
            "version": __version__,
            **({"peers": f"{self.peer_host}:{self.peer_port}"} if self.peer_port else {}),
            **({"peers_connected": self._connected()} if self.peer_limits is not None else {}),
            **({"sync_problems": list(self.sync_problems.values())} if self.sync_problems else {}),
            **({"discovery": self.discovery.status()} if self.discovery is not None else {}),
            **({"reach": self.reach.status()} if self.reach is not None else {}),
            **({"portmap": self.portmap.status()} if self.portmap is not None else {}),
        }

    def _connected(self) -> dict[str, int]:
        """What peers hold open on the peer port now."""
        limits = self.peer_limits
        assert limits is not None
        return {
            "connections": limits.connections,
            "authenticating": limits.unauthenticated,
            "nodes": len(limits.per_peer),
            "channels": limits.channels,
            "buffered": limits.buffered,
        }

    async def serve(self, ready: Any = None) -> None:
        """Serve until agent.stop, SIGTERM or SIGINT; ``ready(status)`` is called once bound."""
        self.stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        path = self.runtime.socket
        server = await asyncio.start_unix_server(self._connection, path=str(path))
        if self.peer_port is not None:
            try:
                await self._serve_peers(self.peer_host, self.peer_port)
            except OSError as exc:
                server.close()
                self.runtime.clear()
                raise PortUnavailable(
                    f"{self.peer_host}:{self.peer_port}: {exc.strerror or exc}"
                ) from None
        await self._start_discovery()
        await self._start_reach()
        self._start_portmap()
        os.chmod(path, 0o600)
        check_private(path, directory=False)
        self.runtime.write_status(self.status())
        log.info("agent started: pid %d, socket %s", os.getpid(), path)
        if ready is not None:
            ready(self.status())
        background = [
            asyncio.create_task(self._every(OUTBOX_INTERVAL_S, self._outbox)),
            asyncio.create_task(self._checkpoints()),
            asyncio.create_task(self._every(AUDIT_CHECKPOINT_S, self._audit_checkpoint)),
        ]
        if self.sync_interval:
            background.append(asyncio.create_task(self._every(self.sync_interval, self._sync)))
            rediscover = self._every(REDISCOVER_CHECK_S, self._rediscover)
            background.append(asyncio.create_task(rediscover))
        if self.peer_limits is not None:
            known = self._every(KNOWN_PEERS_INTERVAL_S, self._known_peers)
            background.append(asyncio.create_task(known))
        if self.discovery is not None:
            background.append(asyncio.create_task(self.discovery.run()))
        try:
            async with server:
                await self.stopping.wait()
        finally:
            log.info("agent stopping")
            for task in background:
                task.cancel()
            server.close()
            if self.peer_server is not None:
                self.peer_server.close()
            await self._stop_discovery()
            await self._stop_reach()
            self.runtime.clear()
            self.kdf_worker.shutdown(wait=True)  # a password change writes the node file
            with contextlib.suppress(RuntimeError):  # after the queued jobs, before closing
                self.worker.submit(self._final_checkpoint)
            self.worker.shutdown(wait=True)
            self.git_worker.shutdown(wait=False)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid is not None and uid != os.getuid():
                log.warning("refused a connection from uid %d", uid)
                return
            while True:
                try:
                    header = await reader.readexactly(protocol.HEADER.size)
                except asyncio.IncompleteReadError:
                    return
                (size,) = protocol.HEADER.unpack(header)
                if size > protocol.MAX_FRAME:
                    log.warning("closed a connection: frame of %d bytes", size)
                    return
                body = await reader.readexactly(size)
                try:
                    request_id, name, params = protocol.check_request(protocol.decode_body(body))
                    params = protocol.from_wire(params)
                except protocol.FrameError as exc:
                    log.warning("closed a connection: %s", exc)
                    return
                raw = params.pop("raw", False) is True and name == "secrets.cat"
                response = await self._answer(request_id, name, params)
                if raw and "result" in response and "warnings" not in response["result"]:
                    # the hot path's reply: no JSON to parse
                    values = [protocol.from_wire(i["data"]) for i in response["result"]["secrets"]]
                    body = protocol.RAW + b"".join(values)
                    writer.write(protocol.HEADER.pack(len(body)) + body)
                else:
                    writer.write(protocol.encode(response))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        except Exception as exc:  # a bug costs this connection only, in one line, no traceback
            log.error("closed a connection: internal error %s", type(exc).__name__)
            return
        finally:
            self.connections -= 1
            with contextlib.suppress(Exception):
                writer.close()

    async def _answer(self, request_id: Any, name: str, params: dict[str, Any]) -> dict[str, Any]:
        started = time.perf_counter()
        try:
            result = await self._dispatch(name, params)
        except SessionInvalid as exc:
            log.info("%s refused: %s", name, exc.detail)
            return _error(request_id, protocol.SESSION_INVALID, exc)
        except PolykeyError as exc:
            log.info("%s failed: %s", name, type(exc).__name__)
            return _error(request_id, protocol.POLYKEY_ERROR, exc)
        except Exception as exc:
            log.error("%s: internal error %s", name, type(exc).__name__)
            return {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {"code": protocol.INTERNAL_ERROR, "message": type(exc).__name__},
            }
        log.info("%s ok in %.1f ms", name, (time.perf_counter() - started) * 1000)
        warnings = self.warnings(params)
        if warnings:
            result = {**result, "warnings": warnings}
        return {"jsonrpc": "2.0", "id": request_id, "result": protocol.to_wire(result)}

    async def _dispatch(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """One path for every method: the session first (unless the method needs none), then
        the agent's own methods on this loop, or the node's on the node thread."""
        token = params.pop("token", None)
        if name not in control.OPEN:
            self.sessions.check(token)
        if name in control.CONTROL:
            caller = control.Caller(self, token if isinstance(token, str) else None)
            return await control.CONTROL.call(caller, name, params)
        loop = asyncio.get_running_loop()
        if name not in methods.METHODS:
            raise methods.UnknownMethod(name[:80])
        call = recorded.call_recorded  # the audit log's record first (docs/spec/audit.md)
        result = await loop.run_in_executor(self.worker, call, self.node, name, params)
        if name == "keys.renew":  # the Node was made again with the new key
            await self._renewed()
        if name in CHANGES_PEERS and self.peer_limits is not None:  # at once, not in 5 s
            try:
                await loop.run_in_executor(self.worker, self._known_peers)
            except Exception as exc:  # the method did its work; the list is made again in 5 s
                log.warning("peer list not refreshed: %s", type(exc).__name__)
        return result


def _error(request_id: Any, code: int, exc: PolykeyError) -> dict[str, Any]:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "error": {
            "code": code,
            "message": exc.message,
            "data": {"exit_code": exc.exit_code, "hint": exc.user_hint, "type": type(exc).__name__},
        },
    }


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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
