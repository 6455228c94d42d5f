"""The serving side of sharing: the peer methods, in one registry, that the peer port answers.

What a peer may scan and fetch, and only what it is missing; what a peer may push
(``PeerService.receive``: `pk vaults push` and stock `git push` alike); notifications, handed to
the node's inbox; link statements, handed to the node's links (a linked node holds every
permission, through the ACL). A peer without permission on a vault gets exactly the answer a
missing vault gives, so a vault's existence does not leak.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dulwich.objects import Commit

from polykey import codec
from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.ssh import PROTOCOL_VERSION
from polykey.rpc import NoParams, Registry
from polykey.sync.checks import UpdateRefused, land, validate
from polykey.sync.intake import Workers
from polykey.trust.acl import Acl
from polykey.trust.links import LINKED
from polykey.trust.rotation import retired as retired_keys
from polykey.vaults.audit import AuditLog, peer_recorded
from polykey.vaults.derive import derive
from polykey.vaults.errors import VaultNotFound
from polykey.vaults.graph import missing_records, planned, with_received
from polykey.vaults.merge import supersedes
from polykey.vaults.objects import VaultObjects
from polykey.vaults.registry import VaultInfo, Vaults
from polykey.vaults.vault import Vault

if TYPE_CHECKING:
    from polykey.network.graph import Graph
    from polykey.notifications import Notifications

MAX_HAVES = 256
PAGE_BYTES = 8 * 1024 * 1024  # raw object bytes in one page of a paged fetch
PAGE_OBJECTS = 1024  # objects in one page: a clone's pages are checked as the next ones come
FIRST_PAGE_OBJECTS = 256  # in the first page: made sooner, so the asker starts checking sooner
READ_BATCH = 256  # records read in one query while a page is made
READ_UP_TO = 64 * 1024  # a record larger than this is read on its own, when it is sent
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


@dataclass(frozen=True)
class Hello:
    version: int | None = None  # the channel checks it on the first hello


@PEER_METHODS.method("peer.hello")
def hello(c: PeerCall, p: Hello) -> dict[str, Any]:
    return {"version": PROTOCOL_VERSION, "node_id": encode_node_id(c.service.node_id)}


@PEER_METHODS.method("vaults.scan")
def scan(c: PeerCall, p: NoParams) -> dict[str, Any]:
    out = []
    service = c.service
    mine = service.links.is_mine(c.peer)
    for info in service.vaults.all():
        perms = service.acl.permissions(info.id, c.peer)
        folder = service.acl.folder(info.id, c.peer)  # a folder grant: that folder alone
        if folder is not None:
            perms = sorted({*perms, *folder.permissions})
        if not perms:
            continue
        entry: dict[str, Any] = {"id": info.id, "name": info.name, "permissions": perms}
        if folder is not None:
            entry["folder"] = folder.path
        if mine:  # a linked node syncs: what it needs to skip a vault that did not change
            from polykey.sync.own import meta_digest

            head = service.vaults.open(info.name).head()
            entry["head"] = head.decode() if head else None
            entry["meta"] = meta_digest(service.vaults, service.acl, info)
        out.append(entry)
    return {"vaults": out}


@dataclass(frozen=True)
class Fetch:
    vault: str  # an id or a name
    haves: list[Any] = field(default_factory=list, repr=False)  # what is not a commit id is ignored
    at: tuple[int, int] | None = None  # a paged fetch: [object index, byte offset]
    head: str | None = None  # a later page: the head the first page named
    raw: bool = False  # a paged fetch: each page as a raw page (codec.Page), not JSON


@PEER_METHODS.method("vaults.fetch")
def fetch(c: PeerCall, p: Fetch) -> dict[str, Any]:
    if len(p.haves) > MAX_HAVES:
        raise InvalidInput(f"haves must be a list of at most {MAX_HAVES} commit ids")
    service = c.service
    info = service.granted(c.peer, p.vault, {"clone", "pull"}, folders=True)
    vault = service.vaults.open(info.name)
    folder = service.acl.scope(info.id, c.peer)
    if folder is not None:  # the vault derived to that folder, as if it were the vault
        vault = derive(vault, folder)
    head = vault.head()
    if head is None:
        raise VaultNotFound(p.vault[:80])
    objects = vault.objects()
    have_ids = {h.encode() for h in p.haves if isinstance(h, str) and len(h) == 40}
    haves_held = {h for h in have_ids if objects.kind(h) == Commit.type_num}
    reply: dict[str, Any] = {
        "vault": {"id": info.id, "name": info.name},
        "head": head.decode(),
        # and the former writers: their commits stay in the history the asker checks
        "writers": [*service.writers(info.id), *service.acl.former_writers(info.id)],
    }
    if folder is not None:  # every derived commit is this node's
        reply["writers"] = [encode_node_id(service.node_id)]
    if p.at is None:  # unpaged (a peer of before paging): everything in one frame
        return {**reply, "objects": collect(vault, head, haves_held)}
    index, offset = p.at
    if index < 0 or offset < 0:
        raise InvalidInput("at must be [object index, byte offset]")
    if p.head is not None:  # a later page: of the head the first page named
        if objects.kind(p.head.encode()) != Commit.type_num:
            raise InvalidInput("head must be a commit of the vault")
        head = p.head.encode()
        reply["head"] = p.head
    planned_ = plan(vault, head, haves_held)
    key = (bytes(c.peer), info.id, head, frozenset(haves_held))
    made = service.ahead.take((*key, index, offset))  # the peer's grant was checked above
    result = made if made is not None else page(objects, planned_, index, offset)
    cursor = result.get("next")
    if cursor is not None:  # made while this page travels and the peer asks for the next
        service.ahead.make((*key, *cursor), lambda: page(objects, planned_, *cursor))
    return codec.Page(reply, **result) if p.raw else {**reply, **result}


def page(
    objects: VaultObjects, plan: list[tuple[bytes, int]], index: int, offset: int
) -> dict[str, Any]:
    """The objects of ``plan`` from ``index`` on, up to PAGE_BYTES of them: whole objects, or
    one part of an object larger than a page (its bytes from ``offset``). ``next`` is the
    cursor of the following page, absent on the last."""
    with objects.source.snapshot():  # type: ignore[attr-defined]
        return _page(objects, plan, index, offset)


def _page(
    objects: VaultObjects, plan: list[tuple[bytes, int]], index: int, offset: int
) -> dict[str, Any]:
    out: list[bytes] = []
    size = 0
    most = min(FIRST_PAGE_OBJECTS, PAGE_OBJECTS) if index == 0 else PAGE_OBJECTS
    result: dict[str, Any]
    while index < len(plan):
        # records a batch at a time; one larger than READ_UP_TO is read only when it is sent
        batch = plan[index : index + READ_BATCH]
        for (sha, kind), (record, length) in zip(
            batch, objects.wire_records(batch, READ_UP_TO), strict=True
        ):
            if offset or (not out and length > PAGE_BYTES):  # a large object travels in parts
                raw = record if record is not None else objects.wire(sha, kind)
                part = raw[offset : offset + PAGE_BYTES]
                done = offset + len(part) >= len(raw)
                cursor = [index + 1, 0] if done else [index, offset + len(part)]
                result = {"objects": [], "part": part, "part_of": len(raw)}
                if cursor[0] < len(plan):
                    result["next"] = cursor
                return result
            if out and (size + length > PAGE_BYTES or len(out) >= most):
                return {"objects": out, "next": [index, 0]}
            out.append(record if record is not None else objects.wire(sha, kind))
            size += length
            index += 1
    return {"objects": out}


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


@dataclass(frozen=True)
class Receive:
    vault: str  # an id or a name
    head: str
    objects: list[Any] = field(repr=False)  # u8 type ‖ raw object each; checked by validate()


@PEER_METHODS.method("vaults.receive")
def receive(c: PeerCall, p: Receive) -> dict[str, Any]:
    return c.service.receive(c.peer, p.vault, p.head.encode(), p.objects)


@dataclass(frozen=True)
class Adopt:
    vault: str  # the vault's id, kept on every node of its owner
    head: str
    objects: list[Any] = field(repr=False)  # checked by validate()
    name: str = ""
    tags: list[Any] = field(default_factory=list, repr=False)  # checked where they land
    grants: dict[str, Any] = field(default_factory=dict, repr=False)
    origin: dict[str, Any] = field(default_factory=dict, repr=False)


@PEER_METHODS.method("vaults.adopt")
def vaults_adopt(c: PeerCall, p: Adopt) -> dict[str, Any]:
    """A linked node sends a vault this node lacks (`pk vaults sync`, `pk backup`): it lands
    under the same id, with its name, tags and grants, after the checks of a push."""
    from polykey.sync.own import adopt

    service = c.service
    if not service.links.is_mine(c.peer):
        raise VaultNotFound(p.vault[:80])  # as any vault this peer may not reach
    head = p.head.encode()
    if len(head) != 40 or not set(head) <= HEX_DIGITS:
        raise InvalidInput("the new head must be a commit id")
    meta = {"name": p.name, "tags": p.tags, "grants": p.grants, "origin": p.origin}
    signers = {bytes(service.node_id), bytes(c.peer), *service.linked(), *_named_writers(meta)}
    retired = retired_keys(service.store)  # renewed keys: nothing signed after their time
    received = validate(p.objects, head, lambda _sha: False, signers, retired=retired)
    with service.store.write() as tx:
        info = adopt(service.vaults, service.acl, tx, p.vault, meta, received, head)
    return {"vault": info.name, "head": p.head, "objects": len(received)}


def _named_writers(meta: dict[str, Any]) -> set[bytes]:
    """The writers a linked node names for its vault: the nodes it granted push, and for a
    clone the origin and the writers the origin named (as its own pulls checked them)."""
    named: set[str] = set()
    grants = meta.get("grants")
    if isinstance(grants, dict):
        named |= {
            str(n) for n, perms in grants.items() if isinstance(perms, list) and "push" in perms
        }
    origin = meta.get("origin")
    if isinstance(origin, dict):
        named.add(str(origin.get("node_id", "")))
        named |= set(str(origin.get("writers", "")).split())
    out: set[bytes] = set()
    for text in named:
        try:
            out.add(bytes(decode_node_id(text)))
        except PolykeyError:
            continue
    return out


@dataclass(frozen=True)
class Meta:
    vault: str
    name: str | None = None
    tags: list[Any] | None = field(default=None, repr=False)  # checked where they land
    grants: dict[str, Any] | None = field(default=None, repr=False)
    origin: dict[str, Any] | None = field(default=None, repr=False)


@PEER_METHODS.method("vaults.meta")
def vaults_meta(c: PeerCall, p: Meta) -> dict[str, Any]:
    """A linked node asks what a vault is beyond its history (its name, tags, grants, origin),
    or, sending them, makes this node's copy mirror them (a backup)."""
    from polykey.sync.own import apply_meta

    service = c.service
    if not service.links.is_mine(c.peer):
        raise VaultNotFound(p.vault[:80])
    info = next((i for i in service.vaults.all() if i.id == p.vault), None)
    if info is None:
        raise VaultNotFound(p.vault[:80])
    if p.name is not None:
        meta = {"name": p.name, "tags": p.tags, "grants": p.grants, "origin": p.origin}
        info = apply_meta(service.vaults, service.acl, info.id, meta)
    return {
        "name": info.name,
        "tags": sorted(info.tags),
        "grants": service.acl.grants(info.id),
        "origin": dict(info.origin),
    }


@dataclass(frozen=True)
class Notification:
    message: Any = field(default=None, repr=False)  # checked by Notifications.receive


@PEER_METHODS.method("notifications.send")
def notification(c: PeerCall, p: Notification) -> dict[str, Any]:
    if c.service.notifications is None:
        raise InvalidInput("this node takes no notifications")
    kept = c.service.notifications.receive(c.peer, p.message)
    if c.service.notified is not None:
        c.service.notified(c.peer)
    return kept


@dataclass(frozen=True)
class LinkStatement:
    statement: Any = field(default=None, repr=False)  # checked by Links


@PEER_METHODS.method("nodes.link")
def nodes_link(c: PeerCall, p: LinkStatement) -> dict[str, Any]:
    """Any node may ask: its statement must be its own (iss = the peer), about this node, and
    verify. It completes a link this node asked for, or is kept as an offer."""
    state, mine = c.service.links.accept(p.statement, c.peer)
    if state == LINKED and mine is not None:
        return {"linked": True, "statement": mine.to_json()}
    return {"linked": False}


@PEER_METHODS.method("nodes.unlink")
def nodes_unlink(c: PeerCall, p: LinkStatement) -> dict[str, Any]:
    """The peer's own unlink statement ends its link with this node (or drops its offer, or
    declines this node's request)."""
    return {"unlinked": c.service.links.unlinked_by(p.statement, c.peer)}


def collect(vault: Vault, head: bytes, haves: set[bytes]) -> list[bytes]:
    """Every object reachable from ``head`` that the holder of ``haves`` lacks, as it travels
    (dulwich's missing-object finder over the vault's store, vaults/graph.py)."""
    return list(missing_records(vault.object_store(shared=True), head, haves))


def plan(vault: Vault, head: bytes, haves: set[bytes]) -> list[tuple[bytes, int]]:
    """The ids and types of the objects ``collect`` would send, in the same fixed order; no
    blob is read. Kept for the pages that follow (vaults/graph.py ``planned``)."""
    return planned(vault.object_store(shared=True), head, haves)


# The sigchain's methods live in their own room and register in the one registry above.
from polykey.sync import chains as _chains  # noqa: E402, F401
from polykey.sync import child as _child  # noqa: E402, F401  (child nodes' methods)
from polykey.sync import finding as _finding  # noqa: E402, F401  (nodes.find)
