"""Vaults of this node and their history: `pk vaults create/list/rename/rm/log/diff/show/revert`,
and the vault tags of `pk vaults tag/untag`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS

if TYPE_CHECKING:
    from polykey.node import Node


@dataclass(frozen=True)
class VaultsCreate:
    name: str
    tags: list[str] = field(default_factory=list)


@METHODS.method("vaults.create")
def vaults_create(node: Node, p: VaultsCreate) -> dict[str, Any]:
    vault = node.vaults.create(p.name, p.tags)
    return {"name": vault.name, "id": vault.id}


@dataclass(frozen=True)
class VaultsList:
    tag: str | None = None


@METHODS.method("vaults.list")
def vaults_list(node: Node, p: VaultsList) -> dict[str, Any]:
    infos = node.vaults.all(p.tag)
    return {
        "vaults": [
            {"name": i.name, "id": i.id, "created": i.created, "tags": i.tags} for i in infos
        ]
    }


@dataclass(frozen=True)
class VaultsRename:
    old: str
    new: str


@METHODS.method("vaults.rename")
def vaults_rename(node: Node, p: VaultsRename) -> dict[str, Any]:
    node.vaults.rename(p.old, p.new)
    return {"old": p.old, "new": p.new}


@dataclass(frozen=True)
class VaultName:
    name: str


@METHODS.method("vaults.rm")
def vaults_rm(node: Node, p: VaultName) -> dict[str, Any]:
    vault_id = node.vaults.remove(p.name)
    node.acl.drop(vault_id)
    return {"name": p.name, "id": vault_id, "removed": True}


@dataclass(frozen=True)
class VaultsLog:
    name: str
    limit: int | None = None
    path: str | None = None


@METHODS.method("vaults.log")
def vaults_log(node: Node, p: VaultsLog) -> dict[str, Any]:
    commits = node.vaults.open(p.name).log(p.limit, p.path)
    return {"commits": [asdict(c) for c in commits]}


@dataclass(frozen=True)
class VaultsDiff:
    name: str
    rev1: str
    rev2: str | None = None
    patch: bool = False


@METHODS.method("vaults.diff")
def vaults_diff(node: Node, p: VaultsDiff) -> dict[str, Any]:
    """The paths changed between two commits; with ``patch``, their old and new values."""
    vault = node.vaults.open(p.name)
    out: list[dict[str, Any]] = []
    for c in vault.diff(p.rev1, p.rev2):
        entry: dict[str, Any] = {"kind": c.kind, "path": c.path}
        if p.patch:
            entry["old"] = vault.read_blob(c.old) if c.old else b""
            entry["new"] = vault.read_blob(c.new) if c.new else b""
        out.append(entry)
    return {"changes": out}


@dataclass(frozen=True)
class VaultRev:
    name: str
    rev: str


@METHODS.method("vaults.show")
def vaults_show(node: Node, p: VaultRev) -> dict[str, Any]:
    vault = node.vaults.open(p.name)
    commit = vault.resolve(p.rev).decode()
    entries = vault.ls("", recursive=True, rev=commit)
    return {"commit": commit, "entries": [{"path": e.path, "kind": e.kind} for e in entries]}


@METHODS.method("vaults.undo")
def vaults_undo(node: Node, p: VaultRev) -> dict[str, Any]:
    return {"commit": node.vaults.open(p.name).undo(p.rev).decode()}


@METHODS.method("vaults.revert")
def vaults_revert(node: Node, p: VaultRev) -> dict[str, Any]:
    return {"commit": node.vaults.open(p.name).revert(p.rev).decode()}


@dataclass(frozen=True)
class VaultsRetag:
    name: str
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@METHODS.method("vaults.retag")
def vaults_retag(node: Node, p: VaultsRetag) -> dict[str, Any]:
    info = node.vaults.retag(p.name, p.add, p.remove)
    return {"name": info.name, "tags": info.tags}


# --- conflict copies ---------------------------------------------------------------------------


@dataclass(frozen=True)
class VaultsConflicts:
    name: str | None = None


@METHODS.method("vaults.conflicts")
def vaults_conflicts(node: Node, p: VaultsConflicts) -> dict[str, Any]:
    from polykey.vaults.merge import conflict_copies

    names = [p.name] if p.name else [i.name for i in node.vaults.all()]
    out = []
    for name in names:
        for c in conflict_copies(node.vaults.open(name)):
            out.append({"vault": name, **asdict(c)})
    return {"conflicts": out}


@dataclass(frozen=True)
class VaultsResolve:
    name: str
    path: str
    keep: str


@METHODS.method("vaults.resolve")
def vaults_resolve(node: Node, p: VaultsResolve) -> dict[str, Any]:
    from polykey.ids import encode_node_id
    from polykey.vaults.merge import resolve

    me = encode_node_id(node.node_id)
    return {"vault": p.name, **resolve(node.vaults.open(p.name), p.path, p.keep, me)}
