"""A person's own nodes: every vault kept the same on all of them, and backups (docs/spec/own.md).

Linked nodes (trust/links.py) hold every permission on each other's vaults. A vault keeps its id
on every node of its owner, so "the same vault" is the same id. ``sync_vault`` brings one vault
to agreement with one linked node: fetch what that node has (checked as every pull is), merge it
(vaults/merge.py), send the merge back (checked as every push is); a vault the other node lacks
is adopted there, one it has and this node lacks is adopted here. Nothing is deleted by a sync.

A backup is a linked node too, opened from its file in this process and reached through
``Peers.attach``: the same methods and checks, no socket. ``mirror`` also copies what is not in a
vault's history (its name, vault tags and grants) so that a restore brings it all back.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from polykey.errors import PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.store.records import Namespace
from polykey.sync.checks import UpdateRefused, land, land_objects, validate, writers
from polykey.trust.rotation import retired as retired_keys
from polykey.vaults.errors import VaultExists, VaultNotFound
from polykey.vaults.graph import with_received
from polykey.vaults.merge import supersedes
from polykey.vaults.objects import objects_ns

if TYPE_CHECKING:
    from polykey.network.peers import Peers
    from polykey.network.ssh import PeerClient
    from polykey.store.nodefile import Transaction
    from polykey.trust.acl import Acl
    from polykey.vaults.merge import Conflict
    from polykey.vaults.registry import VaultInfo, Vaults
    from polykey.vaults.vault import MergeOutcome, Vault

SYNCED = Namespace("vaults/synced")
"""vault id -> JSON {NodeId: the head both nodes agreed on last}: the haves of the next sync,
and the high-water mark a linked node may not go back behind."""

TRIES = 3  # a linked node that moves on while a sync runs: fetch and merge again


def synced(source: Any, vault_id: str) -> dict[str, str]:
    raw = source.get(SYNCED, vault_id.encode())
    if raw is None:
        return {}
    try:
        doc = json.loads(raw)
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in doc.items()} if isinstance(doc, dict) else {}


def _mark(tx: Transaction, vault_id: str, peer: NodeId, head: bytes) -> None:
    marks = synced(tx, vault_id)
    marks[encode_node_id(peer)] = head.decode()
    tx.put(SYNCED, vault_id.encode(), json.dumps(marks, sort_keys=True).encode())


# --- the asking side --------------------------------------------------------------------------


def sync_all(
    vaults: Vaults,
    acl: Acl,
    peers: Peers,
    peer: NodeId,
    names: list[str] | None = None,
    *,
    mirror: bool = False,
    adopt: bool = True,
) -> list[dict[str, Any]]:
    """Sync ``names`` (every vault when None) with the linked node ``peer``, in one session;
    with ``adopt``, vaults only ``peer`` holds come here too. One result per vault."""
    results: list[dict[str, Any]] = []

    async def run(client: PeerClient) -> None:
        listed = await client.call("vaults.scan", {})
        theirs = {str(v["id"]): v for v in listed.get("vaults", []) if isinstance(v, dict)}
        infos = vaults.all() if names is None else [vaults.info(n) for n in names]
        for info in infos:
            try:
                results.append(await _sync_one(vaults, acl, client, peer, info, theirs, mirror))
            except PolykeyError as exc:
                results.append({"vault": info.name, "updated": False, "error": exc.message})
        if adopt and names is None:
            held = {i.id for i in vaults.all()}
            for vault_id, remote in sorted(theirs.items()):
                if vault_id in held:
                    continue
                try:
                    results.append(await _adopt_here(vaults, acl, client, peer, vault_id, remote))
                except PolykeyError as exc:
                    name = str(remote.get("name", vault_id))
                    results.append({"vault": name, "updated": False, "error": exc.message})

    peers.session(peer, run)
    return results


async def _sync_one(
    vaults: Vaults,
    acl: Acl,
    client: PeerClient,
    peer: NodeId,
    info: VaultInfo,
    theirs: dict[str, Any],
    mirror: bool,
) -> dict[str, Any]:
    from polykey.sync.service import collect

    vault = vaults.open(info.name)
    if info.id not in theirs:
        return await _send_new(vaults, acl, client, peer, info, vault)
    local = vault.head()
    mark = synced(vaults.store, info.id).get(encode_node_id(peer))
    remote = theirs[info.id]
    if local is not None and remote.get("head") == local.decode() == mark:
        # nothing moved on either side since the last sync: no fetch
        if mirror and remote.get("meta") != meta_digest(vaults, acl, info):
            await client.call("vaults.meta", {**_meta(vaults, acl, info), "vault": info.id})
        return {"vault": info.name, "updated": False, "how": "up-to-date", "head": mark}
    kind = "up-to-date"
    conflicts: list[Conflict] = []
    for attempt in range(TRIES):
        outcome, remote_head = await _fetch_merge(vaults, client, peer, info, vault)
        if outcome.kind != "up-to-date":
            kind = "merged" if outcome.kind == "merged" else "pulled"
        conflicts.extend(outcome.conflicts)
        head = outcome.head
        if head != remote_head:  # the other node lacks what this one has: send it
            objects = collect(vault, head, {remote_head})
            params = {"vault": info.id, "head": head.decode(), "objects": objects}
            try:
                await client.call("vaults.receive", params)
            except PolykeyError as exc:
                if "pull first" in exc.message and attempt < TRIES - 1:
                    continue  # it moved on meanwhile: fetch and merge again
                raise
            kind = "merged" if kind == "merged" else "sent"
        if mirror and remote.get("meta") != meta_digest(vaults, acl, info):
            await client.call("vaults.meta", {**_meta(vaults, acl, info), "vault": info.id})
        if synced(vaults.store, info.id).get(encode_node_id(peer)) != head.decode():
            with vaults.store.write() as tx:
                _mark(tx, info.id, peer, head)
        result: dict[str, Any] = {
            "vault": info.name,
            "updated": kind != "up-to-date",
            "how": kind,
            "head": head.decode(),
        }
        if conflicts:
            result["conflicts"] = [
                {"path": c.path, "copy": c.copy, "kept_by": c.kept_by, "copied_by": c.copied_by}
                for c in conflicts
            ]
        return result
    raise UpdateRefused(f"{info.name} kept moving on the other node; sync again")


async def _send_new(
    vaults: Vaults, acl: Acl, client: PeerClient, peer: NodeId, info: VaultInfo, vault: Vault
) -> dict[str, Any]:
    """A vault the linked node lacks: it adopts it, id, name, tags, grants and all."""
    from polykey.sync.service import collect

    head = vault.head()
    if head is None:
        return {"vault": info.name, "updated": False, "how": "empty"}
    params = {
        **_meta(vaults, acl, info),
        "vault": info.id,
        "head": head.decode(),
        "objects": collect(vault, head, set()),
    }
    await client.call("vaults.adopt", params)
    with vaults.store.write() as tx:
        _mark(tx, info.id, peer, head)
    return {"vault": info.name, "updated": True, "how": "sent", "head": head.decode()}


async def _fetch_merge(
    vaults: Vaults, client: PeerClient, peer: NodeId, info: VaultInfo, vault: Vault
) -> tuple[MergeOutcome, bytes]:
    """Fetch the linked node's head of the vault, check it, and merge it here."""
    from polykey.sync.client import fetch

    store = vaults.store
    local = vault.head()
    mark = synced(store, info.id).get(encode_node_id(peer), "").encode()
    haves = [h.decode() for h in {local, mark} if h]
    reply = await fetch(client, info.id, haves)
    remote_head = str(reply.get("head", "")).encode()
    if reply.get("vault", {}).get("id") != info.id:
        raise UpdateRefused("the other node answered with another vault")
    signers = {bytes(peer), *writers(reply)}

    def known(sha: bytes) -> bool:
        return store.contains(objects_ns(info.id), bytes.fromhex(sha.decode()))

    retired = retired_keys(store)  # renewed keys: nothing signed after their time
    received = validate(
        reply["objects"], remote_head, known, signers, local=vault.objects(), retired=retired
    )
    both = with_received(vault.object_store(shared=True), received)
    if mark and not supersedes(both, remote_head, mark):
        raise UpdateRefused(
            f"{encode_node_id(peer)} holds an older or rewritten history of {info.name}"
        )
    with store.write() as tx:
        land_objects(tx, info.id, received)
        return vault.merge(tx, remote_head, encode_node_id(peer)), remote_head


async def _adopt_here(
    vaults: Vaults,
    acl: Acl,
    client: PeerClient,
    peer: NodeId,
    vault_id: str,
    remote: dict[str, Any],
) -> dict[str, Any]:
    """A vault only the linked node holds: cloned here under its own id and name."""
    from polykey.sync.client import fetch

    reply = await fetch(client, vault_id, [])
    head = str(reply.get("head", "")).encode()
    named = reply.get("vault", {})
    if named.get("id") != vault_id:
        raise UpdateRefused("the other node answered with another vault")
    signers = {bytes(peer), *writers(reply)}
    retired = retired_keys(vaults.store)
    received = validate(reply["objects"], head, lambda _sha: False, signers, retired=retired)
    meta = await client.call("vaults.meta", {"vault": vault_id})
    with vaults.store.write() as tx:
        info = adopt(vaults, acl, tx, vault_id, meta, received, head)
        _mark(tx, vault_id, peer, head)
    return {"vault": info.name, "updated": True, "how": "adopted", "head": head.decode()}


def meta_digest(vaults: Vaults, acl: Acl, info: VaultInfo) -> str:
    """A digest of ``_meta``: a backup whose digest matches needs no `vaults.meta`."""
    import hashlib

    doc = json.dumps(_meta(vaults, acl, info), sort_keys=True).encode()
    return hashlib.sha256(doc).hexdigest()


def _meta(vaults: Vaults, acl: Acl, info: VaultInfo) -> dict[str, Any]:
    """What a vault is beyond its history: name, vault tags, grants, and origin (a clone)."""
    return {
        "name": info.name,
        "tags": sorted(info.tags),
        "grants": acl.grants(info.id),
        "origin": dict(info.origin),
    }


# --- the serving side (registered in sync/server.py, for linked nodes only) -------------------


def adopt(
    vaults: Vaults,
    acl: Acl,
    tx: Transaction,
    vault_id: str,
    meta: dict[str, Any],
    objects: dict[bytes, bytes],
    head: bytes,
) -> VaultInfo:
    """Register a vault of one's own node under its id, with its name (another free one when it
    is taken here), tags, grants and origin, and land its checked objects, in ``tx``."""
    from polykey.vaults.paths import check_vault_name

    if any(i.id == vault_id for i in vaults.all()):
        raise VaultExists(vault_id, hint="It is synced, not adopted: run the sync again.")
    name = check_vault_name(str(meta.get("name") or vault_id))
    taken = {i.name for i in vaults.all()}
    wanted, n = name, 2
    while wanted in taken:
        wanted = f"{name}-{n}"
        n += 1
    origin = {str(k): str(v) for k, v in dict(meta.get("origin") or {}).items()}
    tags = [str(t) for t in meta.get("tags") or []]
    info = vaults.register(wanted, origin, tx, vault_id=vault_id, tags=tags)
    land(tx, vault_id, objects, head)
    _set_grants(acl, tx, vault_id, meta.get("grants"))
    return info


def apply_meta(vaults: Vaults, acl: Acl, vault_id: str, meta: dict[str, Any]) -> VaultInfo:
    """A backup mirrors its node: the vault's name (when free), tags, grants and origin."""
    with vaults.store.write() as tx:
        info = next((i for i in vaults.all() if i.id == vault_id), None)
        if info is None:
            raise VaultNotFound(vault_id[:80])
        name = str(meta.get("name") or info.name)
        if name != info.name and all(i.name != name for i in vaults.all()):
            vaults.rename_in(tx, info.name, name)
            info = vaults.info(name, tx)
        tags = sorted(str(t) for t in meta.get("tags") or [])
        origin = {str(k): str(v) for k, v in dict(meta.get("origin") or {}).items()}
        vaults.set_meta(tx, info.name, tags=tags, origin=origin)
        _set_grants(acl, tx, vault_id, meta.get("grants"))
        return vaults.info(info.name, tx)


def _set_grants(acl: Acl, tx: Transaction, vault_id: str, grants: Any) -> None:
    if not isinstance(grants, dict):
        return
    clean: dict[str, list[str]] = {}
    for node, perms in grants.items():
        try:
            decode_node_id(str(node))
        except PolykeyError:
            continue
        if isinstance(perms, list):
            clean[str(node)] = sorted({str(p) for p in perms})
    acl.replace(tx, vault_id, clean)
