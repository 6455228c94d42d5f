"""The peer port's one registry of methods, and the service they answer from.

``PEER_METHODS`` holds every method the peer port answers; the rooms that define them
(sync/server.py for vaults, notifications and links, sync/chains.py, sync/child.py,
sync/finding.py) register into it, and sync/server.py imports them all, so importing
``polykey.sync.server`` gives the whole table. ``PeerService`` is what a method runs against:
one node's vaults, ACL, links and inbox; it checks grants (``granted``) and takes pushes
(``receive``). ``collect`` and ``plan`` say what a holder of some commits lacks (the serving
side's fetch, and the client's own push and adopt alike).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from polykey.errors import InvalidInput
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.rpc import Registry
from polykey.sync.checks import UpdateRefused, land, validate
from polykey.sync.intake import Workers
from polykey.trust.acl import Acl
from polykey.trust.rotation import retired as retired_keys
from polykey.vaults.audit import AuditLog, peer_recorded
from polykey.vaults.errors import VaultNotFound
from polykey.vaults.graph import missing_records, planned, with_received
from polykey.vaults.merge import supersedes
from polykey.vaults.registry import VaultInfo, Vaults
from polykey.vaults.vault import Vault

if TYPE_CHECKING:
    from polykey.network.graph import Graph
    from polykey.notifications import Notifications

AHEAD_PAGES = 4  # pages made ahead, for all peers together (at most 8 MiB each)
AHEAD_S = 30.0  # a page made ahead and not asked for within this long is dropped
ZERO_ID = b"0" * 40
HEX_DIGITS = set(b"0123456789abcdef")

Params = dict[str, Any]


@dataclass(frozen=True)
class PeerCall:
    """A peer's request: the service answering, and the NodeId the peer proved it holds."""

    service: PeerService
    peer: NodeId


PEER_METHODS: Registry[PeerCall, dict[str, Any]] = Registry(ignore_unknown_keys=True)
"""Every method the peer port answers, by name (docs/spec/peer-protocol.md). Keys a method does
not know are ignored, not refused: that is how the protocol grows (``at`` and ``head`` of a
paged fetch reach a node of before paging, which answers unpaged)."""


class PeerService:
    """Answers one node's peers; runs on the agent's node worker thread."""

    def __init__(
        self,
        vaults: Vaults,
        acl: Acl,
        node_id: NodeId,
        notifications: Notifications | None = None,
        graph: Graph | None = None,
    ) -> None:
        self.vaults = vaults
        self.graph = graph  # the node's graph (nodes.find, a peer's renewal); the Node's own
        self.store = vaults.store
        self.acl = acl
        self.links = acl.links
        self.node_id = node_id
        self.notifications = notifications
        self.ahead = PagesAhead()
        self.relay: Any = None  # network.relay.Relay when the agent runs with --relay
        self.audit: AuditLog | None = None  # the node's audit log: every request recorded
        # the agent's: told the sender of each notification kept (a child node's parent: its
        # chain is taken again at once, after this request)
        self.notified: Callable[[NodeId], None] | None = None

    def handle(self, peer: NodeId, method: str, params: Params) -> dict[str, Any]:
        """Answer one request; a bad one is an InvalidInput of one line that holds no value."""
        if method not in PEER_METHODS:
            raise InvalidInput(f"unknown method {method[:40]!r}")
        if self.audit is None:
            return PEER_METHODS.call(PeerCall(self, peer), method, params)
        run = lambda: PEER_METHODS.call(PeerCall(self, peer), method, params)  # noqa: E731
        return peer_recorded(self.audit, encode_node_id(peer), method, params, run)

    def granted(
        self, peer: NodeId, wanted: str, perms: set[str], *, folders: bool = False
    ) -> VaultInfo:
        """The vault ``wanted`` (by id or name) if ``peer`` holds one of ``perms`` on it (with
        ``folders``: on a folder of it too); otherwise the answer a missing vault gives."""
        for i in self.vaults.all():
            if wanted not in (i.id, i.name):
                continue
            held = set(self.acl.permissions(i.id, peer))
            folder = self.acl.folder(i.id, peer) if folders else None
            if perms & (held | set(folder.permissions if folder else ())):
                return i
        raise VaultNotFound(wanted[:80])  # the same answer whether it exists or not

    def linked(self) -> set[bytes]:
        """This node's own other nodes (their commits are its own)."""
        return {bytes(n) for n in self.links.mine()}

    def writers(self, vault_id: str) -> list[str]:
        """This node and the nodes granted `push` (and linked): whose signed commits the vault
        takes; for a clone also its origin and the writers the origin named."""
        out = [encode_node_id(self.node_id), *self.acl.writers(vault_id)]
        info = next((i for i in self.vaults.all() if i.id == vault_id), None)
        if info is not None and info.origin:
            named = {str(info.origin.get("node_id", ""))}
            named |= set(str(info.origin.get("writers", "")).split())
            out.extend(sorted(n for n in named if n and n not in out))
        return out

    def receive(
        self,
        peer: NodeId,
        wanted: str,
        head: bytes,
        objects: list[Any],
        expected: bytes | None = None,
    ) -> dict[str, Any]:
        """A push, from `pk vaults push` or stock `git push`: the pusher holds `push`, every new
        commit is signed by a node allowed to write, fast-forward only. The objects stay in
        memory until all of it checks; then they land with the ref in one transaction.

        ``expected``: the head the pusher saw (git's compare-and-swap; 40 zeros for none)."""
        if any(wanted in (i.id, i.name) and self.acl.folder(i.id, peer) for i in self.vaults.all()):
            raise UpdateRefused("this node may read only a folder of the vault: it cannot push")
        info = self.granted(peer, wanted, {"push"})
        if len(head) != 40 or not set(head) <= HEX_DIGITS:
            raise InvalidInput("the new head must be a commit id")
        vault = self.vaults.open(info.name)
        current = vault.head()
        if expected is not None and expected != (current or ZERO_ID):
            raise UpdateRefused("the vault changed since you fetched it; pull first")
        local = vault.objects()
        signers = {bytes(decode_node_id(n)) for n in self.writers(info.id)}

        def known(sha: bytes) -> bool:
            return self.store.contains(local.ns, bytes.fromhex(sha.decode()))

        retired = retired_keys(self.store)  # renewed keys: nothing signed after their time
        received = validate(objects, head, known, signers, local=local, retired=retired)
        both = with_received(vault.object_store(shared=True), received)
        if current is not None and not supersedes(both, head, current):  # (a twin may give way)
            raise UpdateRefused("the push does not fast-forward; pull first")
        with self.store.write() as tx:
            if vault.head(tx) != current:  # a local commit landed meanwhile
                raise UpdateRefused("the vault changed during the push; pull first")
            land(tx, info.id, received, head)
        return {"vault": info.name, "head": head.decode(), "objects": len(received)}


AheadKey = tuple[bytes, str, bytes, frozenset[bytes], int, int]  # peer, vault, head, haves, at


class PagesAhead:
    """Pages of paged fetches made ahead, on a thread of their own: once a page is answered,
    the next one is made while it travels and the peer checks it, so that the peer's next
    request finds it ready. Keyed by the peer, vault, head, haves and cursor: a page goes only
    to the request that would have made it (after that request's grant is checked). At most
    AHEAD_PAGES are held (the oldest dropped first), none longer than AHEAD_S. A page that
    failed to be made ahead is made again when asked for (and fails there, as before)."""

    def __init__(self) -> None:
        self._pages: OrderedDict[AheadKey, tuple[float, Future[dict[str, Any]]]] = OrderedDict()
        self._lock = threading.Lock()
        self._worker: Workers | None = None

    def make(self, key: AheadKey, job: Callable[[], dict[str, Any]]) -> None:
        with self._lock:
            if key in self._pages:
                return
            if self._worker is None:
                self._worker = Workers(1, "pk-pages")
            self._drop_old()
            while len(self._pages) >= AHEAD_PAGES:
                self._pages.popitem(last=False)[1][1].cancel()
            self._pages[key] = (time.monotonic(), self._worker.submit(job))

    def take(self, key: AheadKey) -> dict[str, Any] | None:
        """The page made ahead for ``key`` (waiting for it if it is being made), or None."""
        with self._lock:
            found = self._pages.pop(key, None)
            self._drop_old()
        if found is None:
            return None
        try:
            result: dict[str, Any] = found[1].result()
        except Exception:  # made again by the request itself, which reports the problem
            return None
        return result

    def _drop_old(self) -> None:
        now = time.monotonic()
        for key in [k for k, (at, _) in self._pages.items() if now - at > AHEAD_S]:
            self._pages.pop(key)[1].cancel()


def collect(vault: Vault, head: bytes, haves: set[bytes]) -> list[bytes]:
    """Every object reachable from ``head`` that the holder of ``haves`` lacks, as it travels
    (dulwich's missing-object finder over the vault's store, vaults/graph.py)."""
    return list(missing_records(vault.object_store(shared=True), head, haves))


def plan(vault: Vault, head: bytes, haves: set[bytes]) -> list[tuple[bytes, int]]:
    """The ids and types of the objects ``collect`` would send, in the same fixed order; no
    blob is read. Kept for the pages that follow (vaults/graph.py ``planned``)."""
    return planned(vault.object_store(shared=True), head, haves)
