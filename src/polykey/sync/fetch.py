"""Cloning and pulling a vault from another node, checking everything before it lands.

Everything a peer sends is untrusted: each object's id is computed here from its content; trees
may hold only secrets and directories with valid names; every new commit must be signed (git's
SSH signature, namespace "git") by the node the vault came from; the new head must descend from
what we have (a peer serving an older state is refused). Only then are the objects and the ref
written, in one transaction; a refused update leaves the local vault exactly as it was.
"""

from __future__ import annotations

import functools
import hashlib
import re
from collections.abc import Callable
from typing import Any

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.crypto import sshsig
from polykey.errors import NodeDamaged, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.keys.root import RootKey
from polykey.network.graph import Graph
from polykey.network.ssh import PeerClient, ssh_key
from polykey.store.nodefile import NodeFile, Transaction
from polykey.vaults.errors import VaultExists
from polykey.vaults.objects import VaultObjects, objects_ns, refs_ns
from polykey.vaults.paths import InvalidSecretPath, check_component, fold
from polykey.vaults.registry import VaultInfo, Vaults
from polykey.vaults.vault import BRANCH, GIT_NAMESPACE

TYPES = {1: b"commit", 2: b"tree", 3: b"blob"}
MAX_OBJECT_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 64
RESERVED = {b".polykey-tags", b".polykey-dir"}


class UpdateRefused(PolykeyError):
    """The update from the other node was refused; nothing changed here."""

    exit_code = 53


class NeedsMerge(PolykeyError):
    """The vault has local commits the other node does not have."""

    exit_code = 54
    hint = "Merging is not supported yet: keep the local changes, or clone the vault again."


def remote(store: NodeFile, key: RootKey, peer: NodeId, call: Callable[[PeerClient], Any]) -> Any:
    """Run ``call`` on a channel to ``peer``, over this process's pooled connection to it."""
    from polykey.network.pool import POOL

    address = Graph(store).get(peer)
    client_key = ssh_key(key.signing.openssh_private_pem())
    return POOL.run(client_key, peer, address.host, address.port, call)


def scan(store: NodeFile, key: RootKey, peer: NodeId) -> list[dict[str, Any]]:
    result = remote(store, key, peer, lambda c: c.call("vaults.scan", {}))
    return list(result["vaults"])


def ping(store: NodeFile, key: RootKey, peer: NodeId) -> dict[str, Any]:
    async def hello(client: PeerClient) -> dict[str, Any]:
        return client.hello

    return dict(remote(store, key, peer, hello))


def _fetch(
    store: NodeFile, key: RootKey, peer: NodeId, vault: str, haves: list[str]
) -> dict[str, Any]:
    params = {"vault": vault, "haves": haves}
    return dict(remote(store, key, peer, lambda c: c.call("vaults.fetch", params)))


MAX_PATHS = 1_000_000  # secrets and folders one commit's tree may expand to
_HEX40 = re.compile(rb"[0-9a-f]{40}")


def _checked(reply: Any, wanted: str) -> tuple[dict[str, str], bytes, list[bytes]]:
    """The vault, head and objects of a fetch reply, after checking their shapes and that the
    reply is for the vault asked for (by id or name): anything else is refused."""
    if not isinstance(reply, dict):
        raise UpdateRefused("the other node sent a malformed reply")
    vault, head, objects = reply.get("vault"), reply.get("head"), reply.get("objects")
    if not (
        isinstance(vault, dict)
        and isinstance(vault.get("id"), str)
        and isinstance(vault.get("name"), str)
    ):
        raise UpdateRefused("the other node's reply names no vault")
    if wanted not in (vault["id"], vault["name"]):
        raise UpdateRefused(
            f"asked for vault {wanted[:80]!r}, the other node answered with another vault"
        )
    if not re.fullmatch(r"v[0-9a-v]{26}", vault["id"]):
        raise UpdateRefused("the other node's reply names a vault id of the wrong form")
    if not isinstance(head, str) or not _HEX40.fullmatch(head.encode()):
        raise UpdateRefused("the other node's reply has no valid head commit id")
    if not isinstance(objects, list) or not all(isinstance(o, bytes) for o in objects):
        raise UpdateRefused("the other node's reply carries malformed objects")
    if not isinstance(reply.get("writers", []), list):
        raise UpdateRefused("the other node's reply has a malformed list of writers")
    return {"id": vault["id"], "name": vault["name"]}, head.encode(), objects


def clone(
    store: NodeFile, vaults: Vaults, key: RootKey, peer: NodeId, vault: str, name: str | None
) -> VaultInfo:
    reply = _fetch(store, key, peer, vault, [])
    remote, head, received = _checked(reply, vault)
    local_name = name or remote["name"]
    if any(i.name == local_name for i in vaults.all()):
        raise VaultExists(
            local_name, hint="Give the clone another name: pk vaults clone NODEID VAULT NAME."
        )
    signers = {bytes(peer), *_writers(reply)}
    objects = validate(received, head, lambda _sha: False, signers)
    origin = {
        "node_id": encode_node_id(peer),
        "vault_id": remote["id"],
        "name": remote["name"],
        "high_water": head.decode(),
    }
    with store.write() as tx:
        info = vaults.register(local_name, origin, tx)
        write_objects(tx, info.id, objects, head)
    return info


def pull(store: NodeFile, vaults: Vaults, key: RootKey, name: str) -> dict[str, Any]:
    return pull_many(store, vaults, key, [name], stop_on_error=True)[0]


def pull_many(
    store: NodeFile, vaults: Vaults, key: RootKey, names: list[str], *, stop_on_error: bool = False
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
                    results.append(await _pull_one(store, vaults, client, peer, info))
                except PolykeyError as exc:
                    if stop_on_error:
                        raise
                    results.append({"vault": info.name, "updated": False, "error": exc.message})

        remote(store, key, peer, run)
    return results


async def _pull_one(
    store: NodeFile, vaults: Vaults, client: PeerClient, peer: NodeId, info: VaultInfo
) -> dict[str, Any]:
    name = info.name
    vault = vaults.open(name)
    local = vault.head()
    high = str(info.origin.get("high_water", "")).encode()
    haves = [h.decode() for h in {local, high} if h]
    wanted = str(info.origin["vault_id"])
    reply = await client.call("vaults.fetch", {"vault": wanted, "haves": haves})
    remote, head, received = _checked(reply, wanted)
    if remote["id"] != wanted:
        raise UpdateRefused("the other node answered with another vault")
    if head == local:
        return {"vault": name, "updated": False, "head": head.decode()}
    local_objects = vault.objects()

    def known(sha: bytes) -> bool:
        return store.contains(objects_ns(info.id), bytes.fromhex(sha.decode()))

    signers = {bytes(peer), *_writers(reply)}
    objects = validate(received, head, known, signers, local_tree_stats(local_objects))

    def parents(sha: bytes) -> list[bytes]:
        raw = objects.get(sha)
        obj = _parse(raw, sha) if raw is not None else local_objects.get(sha)
        return list(obj.parents) if isinstance(obj, Commit) else []

    if high and not is_ancestor(high, head, parents):  # cheap when head descends from high
        if is_ancestor(head, high, parents):
            raise UpdateRefused(
                f"{encode_node_id(peer)} serves an older state of {name} (rollback)"
            )
        raise UpdateRefused(f"{encode_node_id(peer)} rewrote the history of {name}")
    if local is not None and not is_ancestor(local, head, parents):
        raise NeedsMerge(name)
    with store.write() as tx:
        # the agent serves other requests while a pull waits on the network: re-check
        if vault.head(tx) != local or vaults.info(name, tx).origin != info.origin:
            raise UpdateRefused(f"{name} changed while it was being pulled; pull again")
        write_objects(tx, info.id, objects, head)
        vaults.set_origin(info.name, {**info.origin, "high_water": head.decode()}, tx)
    return {"vault": name, "updated": True, "head": head.decode(), "objects": len(objects)}


def _writers(reply: dict[str, Any]) -> set[bytes]:
    """The nodes the origin says may write its vault (itself and those it granted push)."""
    out = set()
    for text in reply.get("writers", []):
        try:
            out.add(bytes(decode_node_id(str(text))))
        except PolykeyError:
            continue
    return out


def write_objects(tx: Transaction, vault_id: str, objects: dict[bytes, bytes], head: bytes) -> None:
    ns = objects_ns(vault_id)
    for sha, raw in objects.items():
        tx.put(ns, bytes.fromhex(sha.decode()), raw)
    tx.put(refs_ns(vault_id), BRANCH, head)


def push(store: NodeFile, vaults: Vaults, key: RootKey, name: str, peer: NodeId) -> dict[str, Any]:
    """Send the commits made here since the last pull to the node the vault came from."""
    from polykey.sync.serve import collect

    info = vaults.info(name)
    if not info.origin or info.origin.get("node_id") != encode_node_id(peer):
        raise UpdateRefused(f"vault {name} was not cloned from {encode_node_id(peer)}")
    vault = vaults.open(name)
    head = vault.head()
    base = str(info.origin.get("high_water", "")).encode()
    if head is None or head == base:
        return {"vault": name, "pushed": False}
    objects = collect(vault.objects(), head, {base} if base else set())
    params = {"vault": info.origin["vault_id"], "head": head.decode(), "objects": objects}
    remote(store, key, peer, lambda c: c.call("vaults.receive", params))
    with store.write() as tx:
        now = vaults.info(name, tx).origin  # a pull may have moved it while the push waited
        if str(now.get("high_water", "")).encode() == base:
            vaults.set_origin(name, {**now, "high_water": head.decode()}, tx)
    return {"vault": name, "pushed": True, "head": head.decode(), "objects": len(objects)}


def is_ancestor(old: bytes, new: bytes, parents: Callable[[bytes], list[bytes]]) -> bool:
    todo, seen = [new], set()
    while todo:
        sha = todo.pop()
        if sha == old:
            return True
        if sha in seen:
            continue
        seen.add(sha)
        todo.extend(parents(sha))
    return False


def _parse(raw: bytes, sha: bytes) -> ShaFile:
    return ShaFile.from_raw_string(raw[0], raw[1:], sha=ObjectID(sha))


TreeStats = Callable[[bytes], tuple[int, int]]  # a local tree's id -> (height, paths)


def validate(
    received: list[Any],
    head: bytes,
    known: Callable[[bytes], bool],
    signers: set[bytes],
    local_stats: TreeStats | None = None,
) -> dict[bytes, bytes]:
    """Check a peer's objects; return them by id (hex) or raise UpdateRefused.

    ``local_stats`` measures trees the vault already holds that new trees name (see
    :func:`local_tree_stats`); without it (a clone) every tree must be among the received."""
    objects: dict[bytes, bytes] = {}
    parsed: dict[bytes, ShaFile] = {}
    for raw in received:
        if not isinstance(raw, bytes) or not raw or raw[0] not in TYPES:
            raise UpdateRefused("an object of an unknown or forbidden type")
        if len(raw) > MAX_OBJECT_BYTES:
            raise UpdateRefused("an object is too large")
        body = memoryview(raw)[1:]
        digest = hashlib.sha1(b"%s %d\x00" % (TYPES[raw[0]], len(body)))  # noqa: S324 - git id
        digest.update(body)
        sha = digest.hexdigest().encode()
        objects[sha] = raw
        if raw[0] != Blob.type_num:
            try:
                parsed[sha] = _parse(raw, sha)
            except Exception:
                raise UpdateRefused(f"object {sha.decode()} is malformed") from None

    def present(sha: bytes) -> bool:
        return sha in objects or known(sha)

    if not present(head):
        raise UpdateRefused("the new head is missing")
    subtrees: dict[bytes, list[bytes]] = {}
    for sha, obj in parsed.items():
        if isinstance(obj, Commit):
            _check_commit(sha, obj, present, signers, objects)
        elif isinstance(obj, Tree):
            folded: set[str] = set()
            dirs = subtrees[sha] = []
            for item in obj.iteritems():
                if not _entry_ok(item.path, item.mode):
                    _refuse_entry(sha, item.mode)
                key = _fold(item.path)
                if key in folded:
                    raise UpdateRefused(f"tree {sha.decode()} holds names that differ by case only")
                folded.add(key)
                if not present(item.sha):
                    raise UpdateRefused(f"tree {sha.decode()} names a missing object")
                kind = objects[item.sha][0] if item.sha in objects else None
                if kind is not None and kind != _KIND[item.mode]:
                    raise UpdateRefused(f"tree {sha.decode()} names an object of another type")
                if item.mode == 0o040000:
                    dirs.append(item.sha)
    if head in parsed and not isinstance(parsed[head], Commit):
        raise UpdateRefused("the new head is not a commit")
    roots = [o.tree for o in parsed.values() if isinstance(o, Commit) and o.tree in subtrees]
    sizes = {sha: len(o) for sha, o in parsed.items() if isinstance(o, Tree)}
    _check_depth(subtrees, roots, sizes, local_stats or (lambda _sha: (0, 0)))
    return objects


_KIND = {0o100644: Blob.type_num, 0o040000: Tree.type_num}  # what a tree entry's mode names


@functools.lru_cache(maxsize=65536)
def _entry_ok(name: bytes, mode: int) -> bool:
    if mode not in (0o100644, 0o040000):
        return False
    if name in RESERVED:
        return True
    try:
        check_component(name.decode("utf-8"))
    except (UnicodeDecodeError, InvalidSecretPath):
        return False
    return True


@functools.lru_cache(maxsize=65536)
def _fold(name: bytes) -> str:
    return fold(name.decode("utf-8"))


def _refuse_entry(tree: bytes, mode: int) -> None:
    if mode not in (0o100644, 0o040000):
        raise UpdateRefused(f"tree {tree.decode()} holds a link, submodule or odd mode")
    raise UpdateRefused(f"tree {tree.decode()} holds a forbidden name")


def _check_depth(
    subtrees: dict[bytes, list[bytes]],
    roots: list[bytes],
    sizes: dict[bytes, int],
    local_stats: TreeStats,
) -> None:
    """Refuse folders nested deeper than MAX_DEPTH below a commit's tree, and trees that expand
    to more than MAX_PATHS paths (a tree bomb: one folder named many times), visiting each
    received tree once. A tree held locally counts as what it holds (``local_stats``), so that
    new trees naming a large local tree many times are measured too."""
    height: dict[bytes, int] = {}
    paths: dict[bytes, int] = {}
    for root in roots:
        stack: list[tuple[bytes, bool]] = [(root, False)]
        while stack:
            tree_id, children_done = stack.pop()
            if tree_id in height:
                continue
            kids = subtrees.get(tree_id)
            if kids is None:  # held locally
                height[tree_id], paths[tree_id] = local_stats(tree_id)
            elif children_done:
                height[tree_id] = h = 1 + max((height[k] for k in kids), default=-1)
                if h > MAX_DEPTH:
                    raise UpdateRefused("a tree is nested too deep")
                paths[tree_id] = n = sizes[tree_id] + sum(paths[k] for k in kids)
                if n > MAX_PATHS:
                    raise UpdateRefused(f"a tree expands to more than {MAX_PATHS:,} paths")
            else:
                stack.append((tree_id, True))
                stack.extend((k, False) for k in kids if k not in height)


# (height, paths) of trees by id: a tree's content fixes both, so entries never go stale and
# may be shared by every vault of this process.
_STATS: dict[bytes, tuple[int, int]] = {}
_STATS_MAX = 500_000


def local_tree_stats(objects: VaultObjects) -> TreeStats:
    """Measure trees a vault holds (height, paths), reading each distinct tree once per process."""

    def stats(root: bytes) -> tuple[int, int]:
        known = _STATS.get(root)
        if known is not None:
            return known
        done: dict[bytes, tuple[int, int]] = {}  # this call's own results: safe from a clear
        stack: list[tuple[bytes, bool]] = [(root, False)]
        kids_of: dict[bytes, list[bytes]] = {}
        size_of: dict[bytes, int] = {}
        while stack:
            tree_id, children_done = stack.pop()
            if tree_id in done:
                continue
            if children_done:  # each kid is in `done` by now: measured, or copied below
                kids = [done[k] for k in kids_of.pop(tree_id)]
                height = 1 + max((k[0] for k in kids), default=-1)
                count = size_of.pop(tree_id) + sum(k[1] for k in kids)
                done[tree_id] = (height, min(count, MAX_PATHS + 1))
                continue
            try:
                tree = objects.get_tree(tree_id)
            except NodeDamaged:  # a new tree names a local blob or commit as a folder
                raise UpdateRefused(f"object {tree_id.decode()} is named as a folder") from None
            kids_ids = [bytes(i.sha) for i in tree.iteritems() if i.mode == 0o040000]
            kids_of[tree_id], size_of[tree_id] = kids_ids, len(tree)
            stack.append((tree_id, True))
            for k in kids_ids:
                cached = done.get(k) or _STATS.get(k)
                if cached is None:
                    stack.append((k, False))
                else:
                    done[k] = cached  # kept here: another thread may clear the cache
        if len(_STATS) > _STATS_MAX:
            _STATS.clear()
        _STATS.update(done)
        return done[root]

    return stats


def _check_commit(
    sha: bytes,
    commit: Commit,
    present: Callable[[bytes], bool],
    signers: set[bytes],
    objects: dict[bytes, bytes],
) -> None:
    if not present(commit.tree) or not all(present(p) for p in commit.parents):
        raise UpdateRefused(f"commit {sha.decode()} refers to missing objects")
    tree_kind = objects[commit.tree][0] if commit.tree in objects else Tree.type_num
    parent_kinds = {objects[p][0] for p in commit.parents if p in objects}
    if tree_kind != Tree.type_num or parent_kinds - {Commit.type_num}:
        raise UpdateRefused(f"commit {sha.decode()} names objects of another type")
    if commit.gpgsig is None:
        raise UpdateRefused(f"commit {sha.decode()} is not signed")
    try:
        signer, _, _, _ = sshsig.parse(commit.gpgsig)
        ok = signer in signers and sshsig.check(
            commit.gpgsig, commit.raw_without_sig(), GIT_NAMESPACE, signer
        )
    except sshsig.MalformedSignature:
        ok = False
    if not ok:
        raise UpdateRefused(f"commit {sha.decode()} is not signed by a node allowed to write")
