"""The asking side of sharing: scan, clone, pull and push a vault with another node.

Each operation reads what it needs, talks to the peer (through the node's ``Peers``), and
writes in one transaction that re-checks what it read first: the agent serves other requests
while an operation waits on the network, so a vault may have moved meanwhile. What the peer
sends is checked (sync/checks.py) before any of it lands; a refused update changes nothing.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeGuard

from polykey.errors import PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.sync.checks import (
    MAX_OBJECT_BYTES,
    Intake,
    UpdateRefused,
    fetch_reply,
    land,
    land_objects,
    validate,
    writer_ids,
    writers,
)
from polykey.trust.rotation import retired as retired_keys
from polykey.vaults.errors import VaultExists
from polykey.vaults.objects import objects_ns
from polykey.vaults.registry import VaultInfo, Vaults

if TYPE_CHECKING:
    from polykey.network.peers import Peers
    from polykey.network.ssh import PeerClient


MAX_FETCH_BYTES = 1024 * 1024 * 1024  # all pages of one fetch together


async def fetch(
    client: PeerClient, vault: str, haves: list[str], intake: Intake | None = None
) -> dict[str, Any]:
    """A ``vaults.fetch`` reply with every page's objects gathered (docs/spec/peer-protocol.md,
    "Paged fetch"): pages of a few MiB, an object larger than a page in parts, so no frame
    grows with the vault. The pages must name the same vault and head, and move forward.

    ``intake``: fed each page as it comes, on the intake's own threads, while the next page
    is asked for, made on the other node and received here (the checks of one page overlap
    the transfer of the next). The objects are then the intake's alone: the reply's list is
    left empty (a large history is not held twice)."""
    params: dict[str, Any] = {"vault": vault, "haves": haves, "at": [0, 0], "raw": True}
    reply = await client.call("vaults.fetch", params)
    first = dict(reply)
    pages = _Pages(keep=intake is None)
    while True:
        fresh = pages.take(reply)  # this page's whole objects
        cursor = reply.get("next")
        if cursor is None:
            if intake is not None:
                intake.extend_later(fresh)
            break
        if (
            not isinstance(cursor, list)
            or len(cursor) != 2
            or not all(_whole(n) for n in cursor)
            or cursor <= params["at"]
        ):
            raise UpdateRefused("the other node's pages do not move forward")
        params = {**params, "head": first.get("head"), "at": cursor}
        asking = asyncio.ensure_future(client.call("vaults.fetch", params))
        try:
            if intake is not None:
                intake.extend_later(fresh)
            reply = await asking
        finally:
            asking.cancel()  # a no-op once it is done
        if reply.get("vault") != first.get("vault") or reply.get("head") != first.get("head"):
            raise UpdateRefused("the other node's pages name another vault or head")
    if pages.part:
        raise UpdateRefused("the other node's last object was cut short")
    first["objects"] = pages.objects
    first.pop("next", None)
    return first


class _Pages:
    """The objects of a paged fetch, gathered page by page; an object in parts joined."""

    def __init__(self, *, keep: bool = True) -> None:
        self.objects: list[Any] = []  # with ``keep``: every object received
        self.keep = keep
        self.part = bytearray()
        self.total = 0

    def take(self, reply: dict[str, Any]) -> list[Any]:
        """Gather one page (refusing a malformed one); its whole objects."""
        got = reply.get("objects")
        piece = reply.get("part")
        if not isinstance(got, list):
            raise UpdateRefused("the other node's reply carries malformed objects")
        fresh = list(got)
        self.total += sum(len(o) for o in got if isinstance(o, bytes))
        if piece is not None:
            size = reply.get("part_of")
            if not isinstance(piece, bytes) or not piece or not _whole(size):
                raise UpdateRefused("the other node sent a malformed part of an object")
            if size > MAX_OBJECT_BYTES or len(self.part) + len(piece) > size:
                raise UpdateRefused("an object is too large")
            self.part += piece
            self.total += len(piece)
            if len(self.part) == size:
                fresh.append(bytes(self.part))
                self.part = bytearray()
        elif not got and "next" in reply:
            raise UpdateRefused("the other node sent an empty page")
        if self.total > MAX_FETCH_BYTES:
            raise UpdateRefused("the other node sent more than a fetch may hold")
        if self.keep:
            self.objects.extend(fresh)
        return fresh


def _whole(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def fetch_vault(
    peers: Peers, peer: NodeId, vault: str, intake: Intake | None = None
) -> dict[str, Any]:
    """All of ``vault`` (an id or a name) from ``peer``, on a session of its own: ``fetch``
    with no haves (a clone's first fetch). The reply is checked by ``fetch_reply``."""

    async def run(client: PeerClient) -> dict[str, Any]:
        return await fetch(client, vault, [], intake)

    return peers.session(peer, run)


def scan(peers: Peers, peer: NodeId) -> list[dict[str, Any]]:
    """The vaults ``peer`` lets this node see."""
    return list(peers.call(peer, "vaults.scan", {})["vaults"])


def remote_writers(peers: Peers, peer: NodeId, vault: str) -> dict[str, Any]:
    """The writers a peer names for its vault (as a clone would take them): the vault's name
    there, and the NodeIds whose signed commits it takes, the peer's own among them."""
    params = {"vault": vault, "haves": [], "at": [0, 0], "raw": True}
    reply = peers.call(peer, "vaults.fetch", params)
    named = fetch_reply({**reply, "objects": []}, vault)[0]
    return {
        "vault": named["name"],
        "writers": sorted(encode_node_id(NodeId(w)) for w in {bytes(peer), *writers(reply)}),
    }


def clone(vaults: Vaults, peers: Peers, peer: NodeId, vault: str, name: str | None) -> VaultInfo:
    if name is not None:
        _free(vaults, name)
    intake = Intake(spool=True)
    try:
        reply = fetch_vault(peers, peer, vault, intake)
        remote, head, _received = fetch_reply(reply, vault)
        local_name = name or remote["name"]
        _free(vaults, local_name)
        signers = {bytes(peer), *writers(reply)}
        retired = retired_keys(vaults.store)
        objects = validate(intake, head, lambda _sha: False, signers, retired=retired)
    finally:
        intake.close()  # its threads, when the clone stops early
    origin = {
        "node_id": encode_node_id(peer),
        "vault_id": remote["id"],
        "name": remote["name"],
        "high_water": head.decode(),
        "writers": writer_ids(reply),
    }
    with vaults.store.write() as tx:
        info = vaults.register(local_name, origin, tx)  # refuses a name taken meanwhile
        land(tx, info.id, objects, head)
    return info


def _free(vaults: Vaults, name: str) -> None:
    if any(i.name == name for i in vaults.all()):
        raise VaultExists(
            name, hint="Give the clone another name: pk vaults clone NODEID VAULT NAME."
        )


def pull(vaults: Vaults, peers: Peers, name: str) -> dict[str, Any]:
    return pull_many(vaults, peers, [name], stop_on_error=True)[0]


def pull_many(
    vaults: Vaults, peers: Peers, names: list[str], *, stop_on_error: bool = False
) -> list[dict[str, Any]]:
    """Pull several cloned vaults: one SSH connection per origin node, reused for all of its
    vaults. A vault that fails is reported in its result (or raised with ``stop_on_error``)."""
    by_peer: dict[bytes, list[VaultInfo]] = {}
    for name in names:
        info = vaults.info(name)
        if not info.origin:
            raise UpdateRefused(f"vault {name} was not cloned from another node")
        by_peer.setdefault(bytes(decode_node_id(info.origin["node_id"])), []).append(info)
    results: list[dict[str, Any]] = []
    for peer_raw, infos in by_peer.items():
        peer = NodeId(peer_raw)

        async def run(
            client: PeerClient, infos: list[VaultInfo] = infos, peer: NodeId = peer
        ) -> None:
            for info in infos:
                try:
                    results.append(await _pull_one(vaults, client, peer, info))
                except PolykeyError as exc:
                    if stop_on_error:
                        raise
                    results.append({"vault": info.name, "updated": False, "error": exc.message})

        peers.session(peer, run)
    return results


async def _pull_one(
    vaults: Vaults, client: PeerClient, peer: NodeId, info: VaultInfo
) -> dict[str, Any]:
    intake = Intake(spool=True)
    try:
        return await _pull_into(vaults, client, peer, info, intake)
    finally:
        intake.close()  # its threads, when the pull stops early


async def _pull_into(
    vaults: Vaults, client: PeerClient, peer: NodeId, info: VaultInfo, intake: Intake
) -> dict[str, Any]:
    name = info.name
    vault = vaults.open(name)
    local = vault.head()
    high = str(info.origin.get("high_water", "")).encode()
    haves = [h.decode() for h in {local, high} if h]
    wanted = str(info.origin["vault_id"])
    reply = await fetch(client, wanted, haves, intake)
    remote, head, _received = fetch_reply(reply, wanted)
    if remote["id"] != wanted:
        raise UpdateRefused("the other node answered with another vault")
    if head == local:
        named = writer_ids(reply)  # a grant of push (or its end) reaches the clone even so
        if named != info.origin.get("writers"):
            with vaults.store.write() as tx:
                if vaults.info(name, tx).origin == info.origin:
                    vaults.set_origin(name, {**info.origin, "writers": named}, tx)
        return {"vault": name, "updated": False, "head": head.decode()}
    local_objects = vault.objects()
    store = vaults.store

    def known(sha: bytes) -> bool:
        return store.contains(objects_ns(info.id), bytes.fromhex(sha.decode()))

    signers = {bytes(peer), *writers(reply)}
    retired = retired_keys(store)  # renewed keys: nothing signed after their time
    objects = validate(intake, head, known, signers, local=local_objects, retired=retired)
    from polykey.vaults.graph import is_ancestor, with_received  # a pull's alone
    from polykey.vaults.merge import supersedes

    both = with_received(vault.object_store(shared=True), objects)  # dulwich's merge base

    if high and not supersedes(both, head, high):  # cheap when head descends from high
        if is_ancestor(both, head, high):
            raise UpdateRefused(
                f"{encode_node_id(peer)} serves an older state of {name} (rollback)"
            )
        raise UpdateRefused(f"{encode_node_id(peer)} rewrote the history of {name}")
    with store.write() as tx:
        # the agent serves other requests while a pull waits on the network: the merge is
        # made here, against the head as it is now
        if vaults.info(name, tx).origin != info.origin:
            raise UpdateRefused(f"{name} changed while it was being pulled; pull again")
        land_objects(tx, info.id, objects)
        outcome = vault.merge(tx, head, encode_node_id(peer))
        origin = {**info.origin, "high_water": head.decode(), "writers": writer_ids(reply)}
        vaults.set_origin(info.name, origin, tx)
    result: dict[str, Any] = {
        "vault": name,
        "updated": outcome.kind != "up-to-date",
        "head": outcome.head.decode(),
        "objects": len(objects),
        "how": outcome.kind,
    }
    if outcome.conflicts:
        result["conflicts"] = [
            {"path": c.path, "copy": c.copy, "kept_by": c.kept_by, "copied_by": c.copied_by}
            for c in outcome.conflicts
        ]
    return result


PUSH_TRIES = 3  # a push the origin refuses because it moved on: pull (merging), push again


def push(vaults: Vaults, peers: Peers, name: str, peer: NodeId | None = None) -> dict[str, Any]:
    """Send the commits made here since the last pull to the node the vault came from (by
    default; naming another node is refused). When the origin has moved on, its changes are
    pulled and merged first, then the merge is pushed."""
    from polykey.network.ssh import PeerError

    merged: list[dict[str, Any]] = []
    for attempt in range(PUSH_TRIES):
        try:
            result = _push_once(vaults, peers, name, peer)
        except PeerError as exc:
            if "pull first" not in exc.detail or attempt == PUSH_TRIES - 1:
                raise _push_refused(exc, name) from None
            pulled = pull(vaults, peers, name)
            merged.extend(pulled.get("conflicts", []))
            continue
        if attempt:
            result["merged_first"] = True
        if merged:
            result["conflicts"] = merged
        return result
    raise AssertionError("unreachable")


def _push_once(vaults: Vaults, peers: Peers, name: str, peer: NodeId | None) -> dict[str, Any]:
    from polykey.sync.service import collect

    info = vaults.info(name)
    if not info.origin:
        raise UpdateRefused(
            f"vault {name} was not cloned from another node",
            hint="Push sends a clone's new commits to its origin; share this vault instead.",
        )
    if peer is None:
        peer = decode_node_id(str(info.origin["node_id"]))
    if info.origin.get("node_id") != encode_node_id(peer):
        raise UpdateRefused(f"vault {name} was not cloned from {encode_node_id(peer)}")
    vault = vaults.open(name)
    head = vault.head()
    base = str(info.origin.get("high_water", "")).encode()
    if head is None or head == base:
        return {"vault": name, "pushed": False, "node_id": encode_node_id(peer)}
    objects = collect(vault, head, {base} if base else set())
    params = {"vault": info.origin["vault_id"], "head": head.decode(), "objects": objects}
    peers.call(peer, "vaults.receive", params)
    with vaults.store.write() as tx:
        now = vaults.info(name, tx).origin  # a pull may have moved it while the push waited
        if str(now.get("high_water", "")).encode() == base:
            vaults.set_origin(name, {**now, "high_water": head.decode()}, tx)
    return {
        "vault": name,
        "pushed": True,
        "node_id": encode_node_id(peer),
        "head": head.decode(),
        "objects": len(objects),
    }


def _push_refused(exc: PolykeyError, name: str) -> PolykeyError:
    """The other node's refusal of a push, with the reason that fits a node that may pull it
    (a node that may pull a vault knows it exists: "no such vault" means no push grant)."""
    from polykey.network.ssh import PeerError

    if exc.detail.startswith("No such vault"):
        return PeerError(
            f"the other node does not take pushes to {name} from this node",
            hint="Its owner grants that with `pk vaults share VAULT NODEID --perm push`.",
        )
    if "pull first" in exc.detail:
        return PeerError(
            f"the other node refused the push: {exc.detail}",
            hint=f"Run `pk vaults pull {name}`, then push again.",
        )
    return exc
