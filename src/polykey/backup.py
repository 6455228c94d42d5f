"""Backups that are just another node, and bringing a node back from one (docs/spec/own.md).

A backup is a node file of its own (its own key, its own password), linked to the node it backs
up. `pk backup PATH` opens it in this process (no agent, no port, no SSH), reaches it through
``Peers.attach`` and syncs every vault with it through the pipeline a linked peer uses
(sync/own.py): the objects are checked as any peer's, and vault ids, names, tags, grants and
origins come across. `pk backup restore PATH` runs the other way: vaults the node lacks come
back, records of the node that no longer read are written again from the backup's copies (git
objects are checked against their ids first), and every vault is then synced.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from polykey.errors import InvalidInput, NodeDamaged, PolykeyError
from polykey.ids import encode_node_id
from polykey.node import DEFAULT_KDF, KdfCost, Node

if TYPE_CHECKING:
    from collections.abc import Iterator


class NotMyBackup(InvalidInput):
    """That node file is not a backup of this node."""

    hint = "`pk backup PATH` makes a new backup node at a path where no file is yet."


def _service(node: Node) -> Any:
    from polykey.sync.server import PeerService

    return PeerService(node.vaults, node.acl, node.node_id, node.notifications, node.graph)


class _Pair:
    """This node and the backup node, each reaching the other in this process."""

    def __init__(self, node: Node, other: Node) -> None:
        self.node = node
        self.other = other
        node.peers.attach(other.node_id, node.node_id, _service(other).handle)
        other.peers.attach(node.node_id, other.node_id, _service(node).handle)

    def close(self) -> None:
        self.node.peers.detach(self.other.node_id)
        self.other.peers.detach(self.node.node_id)

    def link(self) -> None:
        """Link the two nodes (each signs the other's NodeId), as `pk nodes link` on both."""
        self.node.link(self.other.node_id)
        self.other.link(self.node.node_id)
        if not (
            self.node.links.is_mine(self.other.node_id)
            and self.other.links.is_mine(self.node.node_id)
        ):
            raise NodeDamaged("the backup node and this node could not be linked")


def _open_backup(path: Path, password: bytes, *, allow_weak: bool) -> Node:
    """The backup node at ``path`` (NodeNotFound when there is none)."""
    if not path.exists():
        from polykey.errors import NodeNotFound

        raise NodeNotFound(str(path))
    return Node.open(path, password, allow_weak=allow_weak)


def _make_linked(
    node: Node, path: Path, password: bytes, *, kdf: KdfCost, allow_weak: bool
) -> None:
    """A new backup node at ``path``, already linked with ``node``: made under a hidden name
    beside it, linked, then put in place, so a backup killed on its first run leaves no
    unlinked node at ``path`` (the next run starts again)."""
    import os
    import secrets

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    partial = path.parent / f".{path.name}.{secrets.token_hex(6)}.partial"
    other, _code = Node.bootstrap(partial, password, kdf=kdf, allow_weak=allow_weak)
    try:
        pair = _Pair(node, other)
        try:
            pair.link()
        finally:
            pair.close()
    finally:
        other.close()
    try:
        os.link(partial, path)  # never replaces a file that appeared meanwhile
    except FileExistsError:
        raise NotMyBackup(f"{path} appeared while the backup node was being made") from None
    finally:
        partial.unlink(missing_ok=True)


def backup(
    node: Node,
    path: Path,
    password: bytes,
    *,
    kdf: KdfCost = DEFAULT_KDF,
    allow_weak: bool = False,
) -> dict[str, Any]:
    """Make (first time) or update the backup node at ``path``: every vault of this node with
    its history, id, name, tags and grants. The backup's own vaults are left as they are."""
    from polykey.sync.own import sync_all

    path = path.resolve()
    if path == Path(node.store.path).resolve():
        raise NotMyBackup(f"{path} is this node itself")
    created = False
    if not path.exists():
        _make_linked(node, path, password, kdf=kdf, allow_weak=allow_weak)
        created = True
    other = Node.open(path, password, allow_weak=allow_weak)
    try:
        if other.node_id == node.node_id:
            raise NotMyBackup(f"{path} is a copy of this node (the same NodeId), not a backup")
        if not created and not (
            node.links.is_mine(other.node_id) and other.links.is_mine(node.node_id)
        ):
            raise NotMyBackup(f"{path} is a node that is not linked with this one")
        pair = _Pair(node, other)
        try:
            results = sync_all(
                node.vaults, node.acl, node.peers, other.node_id, mirror=True, adopt=False
            )
        finally:
            pair.close()
        return {
            "path": str(path),
            "backup_node": encode_node_id(other.node_id),
            "created": created,
            "vaults": results,
        }
    finally:
        other.close()


def restore(
    node: Node,
    path: Path,
    password: bytes,
    *,
    allow_weak: bool = False,
) -> dict[str, Any]:
    """Bring this node back from its backup at ``path``: repair records that no longer read,
    adopt the vaults it lacks, and sync the rest. A node made anew (a new device; from the
    recovery code, or with a new key) is linked to the backup first."""
    from polykey.sync.own import sync_all

    other = _open_backup(path.resolve(), password, allow_weak=allow_weak)
    try:
        if other.node_id == node.node_id:
            raise NotMyBackup(f"{path} is a copy of this node (the same NodeId), not a backup")
        pair = _Pair(node, other)
        try:
            if not node.links.is_mine(other.node_id):
                if node.vaults.count() and not other.links.is_mine(node.node_id):
                    raise NotMyBackup(f"{path} is a node that is not linked with this one")
                pair.link()  # a node made anew: the backup takes it as its owner's
            repaired = repair(node, other)
            results = sync_all(node.vaults, node.acl, node.peers, other.node_id, adopt=True)
        finally:
            pair.close()
        return {
            "path": str(path),
            "backup_node": encode_node_id(other.node_id),
            "repaired": repaired,
            "vaults": results,
        }
    finally:
        other.close()


def repair(node: Node, other: Node) -> list[str]:
    """Write again, from the backup's copies, the records of this node's vaults that no longer
    read (a damaged git object, a damaged ref); objects are checked against their ids."""
    from polykey.vaults.objects import objects_ns, parse, refs_ns
    from polykey.vaults.vault import BRANCH

    theirs = {i.id: i for i in other.vaults.all()}
    repaired: list[str] = []
    for info in _readable_infos(node):
        if info.id not in theirs:
            continue
        ns = objects_ns(info.id)
        for key, raw in _records(other, ns):
            try:
                if node.store.get(ns, key) is not None:
                    continue
            except NodeDamaged:
                pass
            try:
                parse(raw, key.hex().encode(), verify=True)
            except Exception:  # a damaged copy in the backup (or a part of a large one)
                repaired.append(f"{info.name}: object {key.hex()[:12]} not repaired")
                continue
            with node.store.write() as tx:  # a write-once record: gone first, then written
                tx.delete(ns, key)
            with node.store.write() as tx:
                tx.put(ns, key, raw)
            repaired.append(f"{info.name}: object {key.hex()[:12]}")
        try:
            node.store.get(refs_ns(info.id), BRANCH)
        except NodeDamaged:
            head = other.store.get(refs_ns(info.id), BRANCH)
            if head is not None:
                with node.store.write() as tx:
                    tx.put(refs_ns(info.id), BRANCH, head)
                repaired.append(f"{info.name}: head")
    return repaired


def _readable_infos(node: Node) -> Iterator[Any]:
    try:
        yield from node.vaults.all()
    except PolykeyError:
        return


def _records(node: Node, ns: Any) -> Iterator[tuple[bytes, bytes]]:
    for key, raw in node.store.items(ns):
        yield bytes(key), bytes(raw)
