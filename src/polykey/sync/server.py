"""The serving side of sharing: the peer methods the peer port answers (their one registry and
the service they run against: sync/service.py). Importing this module registers them all.

What a peer may scan and fetch, and only what it is missing; what a peer may push
(``PeerService.receive``: `pk vaults push` and stock `git push` alike); notifications, handed to
the node's inbox; link statements, handed to the node's links (a linked node holds every
permission, through the ACL). A peer without permission on a vault gets exactly the answer a
missing vault gives, so a vault's existence does not leak.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from dulwich.objects import Commit

from polykey import codec
from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import decode_node_id, encode_node_id
from polykey.network.ssh import PROTOCOL_VERSION
from polykey.rpc import NoParams
from polykey.sync.checks import validate
from polykey.sync.service import (
    HEX_DIGITS,
    PEER_METHODS,
    PeerCall,
    PeerService,
    collect,
    plan,
)
from polykey.trust.links import LINKED
from polykey.trust.rotation import retired as retired_keys
from polykey.vaults.derive import derive
from polykey.vaults.errors import VaultNotFound
from polykey.vaults.objects import VaultObjects

if TYPE_CHECKING:
    pass

MAX_HAVES = 256
PAGE_BYTES = 8 * 1024 * 1024  # raw object bytes in one page of a paged fetch
PAGE_OBJECTS = 1024  # objects in one page: a clone's pages are checked as the next ones come
FIRST_PAGE_OBJECTS = 256  # in the first page: made sooner, so the asker starts checking sooner
READ_BATCH = 256  # records read in one query while a page is made
READ_UP_TO = 64 * 1024  # a record larger than this is read on its own, when it is sent


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


# The sigchain's methods live in their own room and register in the one registry above.
from polykey.sync import chains as _chains  # noqa: E402, F401
from polykey.sync import child as _child  # noqa: E402, F401  (child nodes' methods)
from polykey.sync import finding as _finding  # noqa: E402, F401  (nodes.find)

__all__ = ["PEER_METHODS", "PeerCall", "PeerService", "collect", "plan"]
