"""The agent's state and the work it does by itself, on the node thread.

:class:`AgentJobs` holds what `pk agent start` sets before the agent serves (the node, its
threads, the peer and discovery settings), tells what the agent is doing (:meth:`status`), and
runs the background jobs: checkpoints of the write-ahead log (the node file stays one file a
user can copy), the outbox of notifications, the audit log's checkpoint, background syncs of
cloned vaults, rediscovery of trusted identities, and the list of known peers for the peer
port's quotas. agent/peering.py and agent/server.py build on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from polykey import __version__
from polykey.agent.methods import audit as recorded
from polykey.agent.runtime import Runtime
from polykey.agent.sessions import Sessions
from polykey.agent.worker import NodeWorker
from polykey.errors import PolykeyError
from polykey.ids import encode_node_id
from polykey.node import Node

log = logging.getLogger("polykey.agent")

OUTBOX_INTERVAL_S = 10.0
AUDIT_CHECKPOINT_S = 3600.0  # the audit log's head signed into the sigchain, if it moved
REDISCOVER_CHECK_S = 300.0  # trusted identities looked at (each rediscovered hourly)
# The write-ahead log is copied into the node file CHECKPOINT_IDLE_S after the last write, or
# CHECKPOINT_MAX_DELAY_S after the first one when writes never pause; checked every
# CHECKPOINT_POLL_S. A checkpoint a reader holds back is tried again at the next poll.
CHECKPOINT_POLL_S = 0.5
CHECKPOINT_IDLE_S = 1.0
CHECKPOINT_MAX_DELAY_S = 10.0
KNOWN_PEERS_INTERVAL_S = 5.0  # how fresh the peer port's list of known NodeIds is
GIT_THREADS = 4  # stock git clients served at once; a stalled one is cut off after peer_idle


class AgentJobs:
    """The agent's state and background jobs; :class:`Agent` serves them."""

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
        self.dht_bootstrap: list[Any] = []  # network.graph.Address; none: the DHT is off
        self.dht_from = ""  # where that list came from: "PK_DHT_BOOTSTRAP", "setting"; "": none
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
            **self._discovery_sources(),
            **({"reach": self.reach.status()} if self.reach is not None else {}),
            **({"portmap": self.portmap.status()} if self.portmap is not None else {}),
        }

    def dht_in_use(self) -> dict[str, Any]:
        """The DHT this agent runs: whether it is on, the bootstrap list it started with, and
        where that list came from: PK_DHT_BOOTSTRAP, the node's setting (`pk nodes
        dht-bootstrap`), or nowhere (off). A new setting counts from the next start."""
        on = self.discovery is not None and self.discovery.dht is not None
        return {
            "on": on,
            "from": self.dht_from or "off",
            "in_use": [str(a) for a in self.dht_bootstrap],
        }

    def _discovery_sources(self) -> dict[str, Any]:
        """Where the DHT bootstrap list and the Pkarr relays came from (`pk agent status`)."""
        relays: dict[str, Any] = {"from": "setting"}
        if self.relay_urls is not None:
            relays = {"from": "PK_PKARR_RELAYS", "urls": list(self.relay_urls)}
        elif self.discovery is not None:
            relays["urls"] = list(self.discovery.relays.urls)
        return {"dht_bootstrap": self.dht_in_use(), "pkarr_relays": relays}

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


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
