"""Secrets and their tags: `pk secrets …` and `pk tags …`. The questions asked across vaults
(find, grep, env, tags, completion, entries) are vaults/search.py's."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS, InvalidParams
from polykey.rpc import NoParams
from polykey.vaults import search

if TYPE_CHECKING:
    from polykey.node import Node


@dataclass(frozen=True)
class SecretsWrite:
    vault: str
    path: str
    data: bytes = field(repr=False)


@METHODS.method("secrets.write")
def secrets_write(node: Node, p: SecretsWrite) -> dict[str, Any]:
    vault = node.vaults.open(p.vault)
    commit = vault.write(p.path, p.data)
    return {"vault": vault.name, "path": p.path, "commit": commit.decode()}


@dataclass(frozen=True)
class SecretsWriteMany:
    vault: str
    items: list[tuple[str, bytes]] = field(repr=False)  # (path, value)
    message: str


@METHODS.method("secrets.write_many")
def secrets_write_many(node: Node, p: SecretsWriteMany) -> dict[str, Any]:
    commit = node.vaults.open(p.vault).write_many(p.items, p.message)
    return {"count": len(p.items), "commit": commit.decode()}


@dataclass(frozen=True)
class SecretsCat:
    items: list[tuple[str, str]]  # (vault, path)
    rev: str | None = None
    entries: bool = False


@METHODS.method("secrets.cat")
def secrets_cat(node: Node, p: SecretsCat) -> dict[str, Any]:
    """Each item's value as ``data``; with ``entries``, an item naming an entry's folder gives
    that folder's files instead, as ``files`` (name -> value), for `pk secrets cat` to show."""
    from polykey.vaults.errors import IsADirectory

    values: list[dict[str, Any]] = []
    for name, path in p.items:
        vault = node.vaults.open(name)
        try:
            values.append({"vault": name, "path": path, "data": vault.read(path, p.rev)})
        except IsADirectory:
            if not p.entries:
                raise
            files = search.entry_files(vault, path, p.rev)
            values.append({"vault": name, "path": path, "files": files})
    return {"secrets": values}


@dataclass(frozen=True)
class SecretsKind:
    vault: str
    path: str
    entry: bool = False


@METHODS.method("secrets.kind")
def secrets_kind(node: Node, p: SecretsKind) -> dict[str, Any]:
    """'secret', 'dir' or None; with ``entry``, a folder also says which of the files that make
    an entry (search.ENTRY_MARKERS) it holds, as ``markers``."""
    vault = node.vaults.open(p.vault)
    kind = vault.kind(p.path)
    if kind == "dir" and p.entry:
        return {"kind": kind, "markers": search.entry_markers(vault, p.path)}
    return {"kind": kind}


@dataclass(frozen=True)
class SecretsLs:
    vault: str | None = None
    path: str = ""
    recursive: bool = False
    tag: str | None = None


@METHODS.method("secrets.ls")
def secrets_ls(node: Node, p: SecretsLs) -> dict[str, Any]:
    """A folder of a vault; with ``tag``, the secrets carrying it (in ``vault``, or in all)."""
    if p.tag is not None:
        tagged = search.tagged(node.vaults, p.tag, p.vault)
        rows = [{"vault": f.vault, "path": f.path, "kind": "secret"} for f in tagged.found]
        if tagged.unreadable:
            return {"entries": rows, "unreadable_tags": tagged.unreadable}
        return {"entries": rows}
    if p.vault is None:
        raise InvalidParams("name a vault, or a tag")
    entries = node.vaults.open(p.vault).ls(p.path, recursive=p.recursive)
    return {"entries": [{"vault": p.vault, "path": e.path, "kind": e.kind} for e in entries]}


@dataclass(frozen=True)
class SecretsRm:
    items: list[tuple[str, str]]  # (vault, path)
    recursive: bool = False


@METHODS.method("secrets.rm")
def secrets_rm(node: Node, p: SecretsRm) -> dict[str, Any]:
    """One commit per vault, all in one transaction."""
    groups: dict[str, list[str]] = {}
    for vault_name, path in p.items:
        groups.setdefault(vault_name, []).append(path)
    opened = {name: node.vaults.open(name) for name in groups}
    commits = {}
    with node.store.write() as tx:
        for name, paths in groups.items():
            commits[name] = opened[name].remove(paths, recursive=p.recursive, tx=tx)
    return {"commits": {k: v.decode() for k, v in commits.items()}}


@dataclass(frozen=True)
class SecretsMove:
    src_vault: str
    src_path: str
    dst_vault: str
    dst_path: str = ""
    force: bool = False
    copy: bool = False


@METHODS.method("secrets.move")
def secrets_move(node: Node, p: SecretsMove) -> dict[str, Any]:
    from polykey.vaults.vault import transfer

    source = node.vaults.open(p.src_vault)
    if p.src_vault == p.dst_vault:
        source.move_within(p.src_path, p.dst_path, force=p.force, copy=p.copy)
    else:
        target = node.vaults.open(p.dst_vault)
        transfer(source, p.src_path, target, p.dst_path, force=p.force, copy=p.copy)
    return {"copied" if p.copy else "moved": True}


@dataclass(frozen=True)
class SecretsMkdir:
    vault: str
    path: str
    parents: bool = False


@METHODS.method("secrets.mkdir")
def secrets_mkdir(node: Node, p: SecretsMkdir) -> dict[str, Any]:
    vault = node.vaults.open(p.vault)
    commit = vault.mkdir(p.path, parents=p.parents)
    return {"vault": vault.name, "path": p.path, "commit": commit.decode()}


@dataclass(frozen=True)
class SecretPath:
    vault: str
    path: str


@METHODS.method("secrets.stat")
def secrets_stat(node: Node, p: SecretPath) -> dict[str, Any]:
    st = node.vaults.open(p.vault).stat(p.path)
    return {"vault": p.vault, **asdict(st)}


@METHODS.method("secrets.history")
def secrets_history(node: Node, p: SecretPath) -> dict[str, Any]:
    from polykey.vaults.errors import SecretNotFound

    vault = node.vaults.open(p.vault)
    commits = vault.log(path=p.path)
    if not commits and vault.kind(p.path) is None:
        raise SecretNotFound(f"{vault.name}:{p.path}")
    return {"commits": [asdict(c) for c in commits]}


@dataclass(frozen=True)
class SecretsFind:
    pattern: str
    vaults: list[str] = field(default_factory=list)  # none: every vault


@METHODS.method("secrets.find")
def secrets_find(node: Node, p: SecretsFind) -> dict[str, Any]:
    found = search.find(node.vaults, p.pattern, p.vaults)
    return {"matches": [{"vault": f.vault, "path": f.path} for f in found]}


@dataclass(frozen=True)
class SecretsGrep:
    pattern: str
    vaults: list[str] = field(default_factory=list)  # none: every vault
    ignore_case: bool = False


@METHODS.method("secrets.grep")
def secrets_grep(node: Node, p: SecretsGrep) -> dict[str, Any]:
    lines = search.grep(node.vaults, p.pattern, ignore_case=p.ignore_case, only=p.vaults)
    return {"matches": [{"vault": x.vault, "path": x.path, "line": x.text} for x in lines]}


@dataclass(frozen=True)
class SecretsEnv:
    items: list[tuple[str, str]]  # (vault, path: a secret, a folder, or "" for all)


@METHODS.method("secrets.env")
def secrets_env(node: Node, p: SecretsEnv) -> dict[str, Any]:
    """Every secret under each VAULT[:PATH] as [vault, path, relative name, value]."""
    out: list[list[Any]] = []
    for vault_name, path in p.items:
        for s in search.secrets_under(node.vaults.open(vault_name), path):
            out.append([vault_name, s.path, s.name, s.value])
    return {"secrets": out}


@dataclass(frozen=True)
class SecretsComplete:
    path: str = ""
    vault: str | None = None


@METHODS.method("secrets.complete")
def secrets_complete(node: Node, p: SecretsComplete) -> dict[str, Any]:
    """Shell completion (cli/completion.py, search.completions): one name a line, as bytes
    (the hot path decodes no JSON)."""
    names = search.completions(node.vaults, p.path, p.vault)
    return {"data": "".join(f"{name}\n" for name in names).encode("utf-8", "surrogateescape")}


@METHODS.method("tags.list")
def tags_list(node: Node, p: NoParams) -> dict[str, Any]:
    counted = search.tag_counts(node.vaults)
    result: dict[str, Any] = {"tags": {t: asdict(c) for t, c in counted.counts.items()}}
    if counted.unreadable:
        result["unreadable_tags"] = counted.unreadable
    return result


@dataclass(frozen=True)
class TagsSet:
    vault: str
    path: str
    add: list[str] = field(default_factory=list)
    remove: list[str] = field(default_factory=list)


@METHODS.method("tags.set")
def tags_set(node: Node, p: TagsSet) -> dict[str, Any]:
    vault = node.vaults.open(p.vault)
    commit = vault.set_tags(p.path, p.add, p.remove)
    return {"vault": vault.name, "path": p.path, "commit": commit.decode()}
