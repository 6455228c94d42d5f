"""Other nodes and what is shared with them: `pk nodes …` (own nodes: `pk nodes link/unlink/mine`),
`pk vaults share/unshare/permissions/scan/clone/pull/push/signers`, `pk notifications …`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from polykey.agent.methods import METHODS
from polykey.errors import PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.rpc import NoParams

if TYPE_CHECKING:
    from polykey.node import Node

T = TypeVar("T")


def vault_writers(node: Node, name: str) -> list[str]:
    """The NodeIds whose commits the vault takes: this node, the nodes granted `push` on it, and
    for a clone the node it was cloned from and the writers that node named. Never read from
    the commits themselves."""
    info = node.vaults.info(name)
    writers = {
        encode_node_id(node.node_id),
        *node.acl.writers(info.id),
        *node.acl.former_writers(info.id),  # their commits stay in the history
    }
    if info.origin.get("node_id"):
        writers.add(str(info.origin["node_id"]))
        writers |= set(str(info.origin.get("writers", "")).split())
    return sorted(writers)


# --- the node graph ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Peer:
    node_id: str

    @property
    def id(self) -> NodeId:
        return decode_node_id(self.node_id)


@dataclass(frozen=True)
class NodesAdd:
    node_id: str
    address: str


@METHODS.method("nodes.add")
def nodes_add(node: Node, p: NodesAdd) -> dict[str, Any]:
    from polykey.network.graph import parse_address

    address = parse_address(p.address)
    node.graph.add(decode_node_id(p.node_id), address)
    return {"node_id": p.node_id, "address": str(address)}


@METHODS.method("nodes.list")
def nodes_list(node: Node, p: NoParams) -> dict[str, Any]:
    return {"nodes": [{"node_id": k, "address": str(a)} for k, a in node.graph.all().items()]}


@METHODS.method("nodes.rm")
def nodes_rm(node: Node, p: Peer) -> dict[str, Any]:
    from polykey.network.graph import UnknownNode

    if not node.graph.remove(p.id):
        raise UnknownNode(p.node_id)
    return {"node_id": p.node_id, "removed": True}


@METHODS.method("nodes.ping")
def nodes_ping(node: Node, p: Peer) -> dict[str, Any]:
    import time

    started = time.perf_counter()
    reply = node.peers.hello(p.id)
    return {**reply, "ms": round((time.perf_counter() - started) * 1000, 1)}


@METHODS.method("nodes.connections")
def nodes_connections(node: Node, p: NoParams) -> dict[str, Any]:
    return {"connections": node.peers.connections()}


# --- own nodes (docs/spec/links.md) -------------------------------------------------------------


@METHODS.method("nodes.link")
def nodes_link(node: Node, p: Peer) -> dict[str, Any]:
    return node.link(p.id)


@METHODS.method("nodes.unlink")
def nodes_unlink(node: Node, p: Peer) -> dict[str, Any]:
    return node.unlink(p.id)


@METHODS.method("nodes.mine")
def nodes_mine(node: Node, p: NoParams) -> dict[str, Any]:
    return node.mine()


# --- grants ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultsShare:
    name: str
    node_id: str
    permissions: list[str] = field(default_factory=list)  # none: trust.acl.DEFAULT
    path: str | None = None  # a folder of the vault alone (docs/spec/derived.md)


@METHODS.method("vaults.share")
def vaults_share(node: Node, p: VaultsShare) -> dict[str, Any]:
    """Grant, then tell the node (queued in the outbox when it cannot be reached now); in
    the audit log, whether the agent runs or not."""
    from polykey.agent.methods.audit import LOCAL, run_recorded
    from polykey.vaults.audit import Event

    event = Event(LOCAL, "vaults.share", p.name[:200], p.path, subject=p.node_id[:200])
    return run_recorded(node, [event], False, lambda: _share(node, p))


def _share(node: Node, p: VaultsShare) -> dict[str, Any]:
    from polykey.network.graph import UnknownNode
    from polykey.trust.acl import DEFAULT

    info = node.vaults.info(p.name)
    if ":" in p.node_id:
        return _share_with_identity(node, info.name, info.id, p.node_id, p.permissions, p.path)
    peer = decode_node_id(p.node_id)
    granted = node.acl.grant(info.id, peer, p.permissions or list(DEFAULT), p.path)
    note = f"Vault {info.name} ({info.id}) is shared with you: {', '.join(granted)}."
    try:
        delivery = node.notifications.send(peer, note)
    except UnknownNode:
        delivery = {"delivered": False, "queued": False}
    return {"vault": info.name, "node_id": p.node_id, "permissions": granted, **delivery}


def _share_with_identity(
    node: Node,
    name: str,
    vault_id: str,
    identity: str,
    perms: list[str] | None,
    folder: str | None = None,
) -> dict[str, Any]:
    """Grant to a person (``github:bob``): every node of the identity's verified gestalt,
    now or later, holds the grant; the identity becomes trusted; each node of the gestalt
    known now is told (queued when it cannot be reached)."""
    from polykey.network.graph import UnknownNode
    from polykey.trust.acl import DEFAULT
    from polykey.trust.gestalts import UnknownIdentity, parse_identity

    parse_identity(identity)
    known = {i["id"] for i in node.gestalts.identities()}
    if identity not in known:
        raise UnknownIdentity(identity[:80])
    node.gestalts.trust(identity, True)
    granted = node.acl.grant(vault_id, identity, perms or list(DEFAULT), folder)
    note = f"Vault {name} ({vault_id}) is shared with {identity}: {', '.join(granted)}."
    told: dict[str, Any] = {}
    for member in sorted(node.gestalts.gestalt(identity).nodes):
        try:
            told[member] = node.notifications.send(decode_node_id(member), note)
        except UnknownNode:
            told[member] = {"delivered": False, "queued": False}
    delivered = any(t.get("delivered") for t in told.values())
    queued = any(t.get("queued") for t in told.values())
    return {
        "vault": name,
        "node_id": identity,
        "permissions": granted,
        "delivered": delivered,
        "queued": queued,
        "nodes": told,
    }


@dataclass(frozen=True)
class VaultPeer:
    name: str
    node_id: str


@METHODS.method("vaults.unshare")
def vaults_unshare(node: Node, p: VaultPeer) -> dict[str, Any]:
    """Revoke, once the exposure report of each node losing access is kept (what it could
    read, what it pulled: `pk exposure`); in the audit log, whether the agent runs or not."""
    from polykey.agent.methods.audit import LOCAL, run_recorded
    from polykey.vaults.audit import Event

    event = Event(LOCAL, "vaults.unshare", p.name[:200], subject=p.node_id[:200])
    return run_recorded(node, [event], False, lambda: _unshare(node, p))


def _unshare(node: Node, p: VaultPeer) -> dict[str, Any]:
    info = node.vaults.info(p.name)
    who: NodeId | str = p.node_id if ":" in p.node_id else decode_node_id(p.node_id)
    losing = [who] if not isinstance(who, str) else _members(node, who)
    reports = [
        node.expose(n, f"unshare of {info.name}", [info.id])
        for n in losing
        if node.acl.permissions(info.id, n) or node.acl.folder(info.id, n) is not None
    ]
    revoked = node.acl.revoke(info.id, who)
    out = {"vault": info.name, "node_id": p.node_id, "revoked": revoked}
    return {**out, "exposed": [_exposed(node, r) for r in reports]}


def _members(node: Node, identity: str) -> list[NodeId]:
    """The nodes of an identity's gestalt, as known now."""
    try:
        return [decode_node_id(n) for n in sorted(node.gestalts.gestalt(identity).nodes)]
    except PolykeyError:
        return []


def _exposed(node: Node, report: dict[str, Any]) -> dict[str, Any]:
    """What `vaults unshare` says of a report: the node, and the secrets to rotate."""
    from polykey.vaults.exposure import still_current

    current = still_current(node.vaults, report)
    rotate = [f"{v}:{path}" for v, paths in sorted(current.items()) for path in paths]
    return {"node_id": report["node_id"], "needs_rotation": rotate}


@dataclass(frozen=True)
class VaultName:
    name: str


@METHODS.method("vaults.permissions")
def vaults_permissions(node: Node, p: VaultName) -> dict[str, Any]:
    info = node.vaults.info(p.name)
    return {"vault": info.name, "permissions": node.acl.grants(info.id)}


@dataclass(frozen=True)
class VaultsSigners:
    name: str
    node_id: str | None = None


@METHODS.method("vaults.signers")
def vaults_signers(node: Node, p: VaultsSigners) -> dict[str, Any]:
    """The nodes whose signed commits a vault takes (its writers), for git's allowed signers:
    of this node's vault (``vault_writers``), or with ``node_id``, of that node's vault as it
    names them (a fetch, as `pk vaults clone` makes: the node and the writers it names)."""
    if p.node_id is None:
        from polykey.trust.rotation import rotations

        writers = vault_writers(node, p.name)
        until = {o: r.until for o, r in rotations(node.store).items() if o in writers}
        return {"vault": node.vaults.info(p.name).name, "writers": writers, "until": until}
    from polykey.sync.client import remote_writers

    peer = decode_node_id(p.node_id)
    return {"node_id": encode_node_id(peer), **remote_writers(node.peers, peer, p.name)}


# --- sync --------------------------------------------------------------------------------------


def _presented(node: Node, peer: NodeId, ask: Callable[[], T]) -> T:
    """``ask`` the peer after handing it this node's sigchain (people.present). Presenting is
    done once per head and peer in a process; a peer that answers "no such vault" after that
    may have dropped the copy it held (`pk sigchain forget` after a fork): present once more
    and ask again, so a node cleared by its peer is not refused until this agent restarts."""
    from polykey.people import present

    present(node, peer)
    try:
        return ask()
    except PolykeyError as exc:
        if exc.exit_code != 51 or node.presented.pop(bytes(peer), None) is None:
            raise
    present(node, peer)
    return ask()


@METHODS.method("vaults.scan")
def vaults_scan(node: Node, p: Peer) -> dict[str, Any]:
    from polykey.people import present
    from polykey.sync.client import scan

    present(node, p.id)
    return {"vaults": scan(node.peers, p.id)}


@dataclass(frozen=True)
class VaultsClone:
    node_id: str
    vault: str
    name: str | None = None  # the local name; the vault's own without it


@METHODS.method("vaults.clone")
def vaults_clone(node: Node, p: VaultsClone) -> dict[str, Any]:
    from polykey.sync.client import clone

    peer = decode_node_id(p.node_id)
    info = _presented(node, peer, lambda: clone(node.vaults, node.peers, peer, p.vault, p.name))
    return {"name": info.name, "id": info.id, "origin": info.origin}


@dataclass(frozen=True)
class VaultsPull:
    name: str | None = None  # none: every clone


@METHODS.method("vaults.pull")
def vaults_pull(node: Node, p: VaultsPull) -> dict[str, Any]:
    from polykey.people import present
    from polykey.sync.client import pull, pull_many

    clones = [i for i in node.vaults.all() if i.origin and (p.name is None or p.name == i.name)]
    origins = sorted({str(i.origin.get("node_id", "")) for i in clones} - {""})
    name = p.name
    if name and len(origins) == 1:
        peer = decode_node_id(origins[0])
        return {"pulled": [_presented(node, peer, lambda: pull(node.vaults, node.peers, name))]}
    for origin in origins:
        present(node, decode_node_id(origin))
    if p.name:
        return {"pulled": [pull(node.vaults, node.peers, p.name)]}
    names = [i.name for i in clones]
    return {"pulled": pull_many(node.vaults, node.peers, names)}


@dataclass(frozen=True)
class VaultsPush:
    name: str
    node_id: str | None = None  # the clone's origin when not given


@METHODS.method("vaults.push")
def vaults_push(node: Node, p: VaultsPush) -> dict[str, Any]:
    from polykey.sync.client import push

    peer = decode_node_id(p.node_id) if p.node_id is not None else None
    return push(node.vaults, node.peers, p.name, peer)


# --- notifications -----------------------------------------------------------------------------


@dataclass(frozen=True)
class NotificationsSend:
    node_id: str
    message: str


@METHODS.method("notifications.send")
def notifications_send(node: Node, p: NotificationsSend) -> dict[str, Any]:
    return node.notifications.send(decode_node_id(p.node_id), p.message)


@dataclass(frozen=True)
class NotificationsRead:
    unread: bool = False


@METHODS.method("notifications.read")
def notifications_read(node: Node, p: NotificationsRead) -> dict[str, Any]:
    inbox = node.notifications
    return {"notifications": inbox.read(p.unread), "outbox": inbox.outbox()}


@METHODS.method("notifications.clear")
def notifications_clear(node: Node, p: NoParams) -> dict[str, Any]:
    return {"cleared": node.notifications.clear()}
