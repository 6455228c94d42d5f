"""The operations the CLI asks for, in one table, whether the agent runs them or the CLI itself.

Each method takes the unlocked Node and a dict of parameters (JSON values, plus bytes where a
secret travels) and returns a dict. The agent serves exactly this table over its socket (bytes
become ``{"$b64": ...}`` on the wire); without an agent, the CLI calls the same functions
in-process. So every command behaves the same in both modes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.node import Node

if TYPE_CHECKING:
    from polykey.vaults.vault import Vault

Params = dict[str, Any]
Method = Callable[[Node, Params], dict[str, Any]]
METHODS: dict[str, Method] = {}


class InvalidParams(InvalidInput):
    """Invalid parameters for an agent method."""


class UnknownMethod(PolykeyError):
    """No such agent method."""

    exit_code = 2
    hint = "The CLI and the agent may be of different versions; restart the agent."


def method(name: str) -> Callable[[Method], Method]:
    def register(fn: Method) -> Method:
        METHODS[name] = fn
        return fn

    return register


def call(node: Node, name: str, params: Params) -> dict[str, Any]:
    fn = METHODS.get(name)
    if fn is None:
        raise UnknownMethod(name)
    return fn(node, params)


# --- parameter access --------------------------------------------------------------------------


def text(p: Params, key: str, *, optional: bool = False) -> str:
    value = p.get(key)
    if value is None and optional:
        return ""
    if not isinstance(value, str):
        raise InvalidParams(f"{key} must be text")
    return value


def opt_text(p: Params, key: str) -> str | None:
    value = p.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParams(f"{key} must be text")
    return value


def data(p: Params, key: str) -> bytes:
    value = p.get(key)
    if not isinstance(value, bytes):
        raise InvalidParams(f"{key} must be bytes")
    return value


def flag(p: Params, key: str) -> bool:
    value = p.get(key, False)
    if not isinstance(value, bool):
        raise InvalidParams(f"{key} must be true or false")
    return value


def opt_int(p: Params, key: str) -> int | None:
    value = p.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise InvalidParams(f"{key} must be a whole number")
    return value


def texts(p: Params, key: str) -> list[str]:
    value = p.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidParams(f"{key} must be a list of text")
    return value


def pairs(p: Params, key: str) -> list[tuple[str, str]]:
    value = p.get(key, [])
    if not isinstance(value, list) or not all(
        isinstance(v, list) and len(v) == 2 and all(isinstance(x, str) for x in v) for v in value
    ):
        raise InvalidParams(f"{key} must be a list of [text, text] pairs")
    return [(a, b) for a, b in value]


# --- node and keys -----------------------------------------------------------------------------


@method("node.info")
def node_info(node: Node, p: Params) -> dict[str, Any]:
    return asdict(node.info())


@method("node.check")
def node_check(node: Node, p: Params) -> dict[str, Any]:
    damage = node.check()
    found = [{"place": d.place, "problem": d.problem, "kind": d.kind} for d in damage]
    return {"ok": not damage, "damage": found}


@method("keys.public")
def keys_public(node: Node, p: Params) -> dict[str, Any]:
    from polykey.ids import encode_node_id

    return {"node_id": encode_node_id(node.node_id), "openssh": node.key.openssh_public()}


@method("keys.sign")
def keys_sign(node: Node, p: Params) -> dict[str, Any]:
    return {"signature": node.sign_file(data(p, "data"))}


@method("keys.decrypt")
def keys_decrypt(node: Node, p: Params) -> dict[str, Any]:
    return {"data": node.decrypt(data(p, "data"))}


# --- vaults ------------------------------------------------------------------------------------


@method("vaults.create")
def vaults_create(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.create(text(p, "name"), texts(p, "tags"))
    return {"name": vault.name, "id": vault.id}


@method("vaults.list")
def vaults_list(node: Node, p: Params) -> dict[str, Any]:
    infos = node.vaults.all(opt_text(p, "tag"))
    return {
        "vaults": [
            {"name": i.name, "id": i.id, "created": i.created, "tags": i.tags} for i in infos
        ]
    }


@method("vaults.rename")
def vaults_rename(node: Node, p: Params) -> dict[str, Any]:
    node.vaults.rename(text(p, "old"), text(p, "new"))
    return {"old": p["old"], "new": p["new"]}


@method("vaults.rm")
def vaults_rm(node: Node, p: Params) -> dict[str, Any]:
    vault_id = node.vaults.remove(text(p, "name"))
    node.acl.drop(vault_id)
    return {"name": p["name"], "id": vault_id, "removed": True}


@method("vaults.log")
def vaults_log(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "name"))
    commits = vault.log(opt_int(p, "limit"), opt_text(p, "path"))
    return {"commits": [asdict(c) for c in commits]}


@method("vaults.diff")
def vaults_diff(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "name"))
    changes = vault.diff(text(p, "rev1"), opt_text(p, "rev2"))
    out: list[dict[str, Any]] = []
    for c in changes:
        entry: dict[str, Any] = {"kind": c.kind, "path": c.path}
        if flag(p, "patch"):
            entry["old"] = vault.read_blob(c.old) if c.old else b""
            entry["new"] = vault.read_blob(c.new) if c.new else b""
        out.append(entry)
    return {"changes": out}


@method("vaults.show")
def vaults_show(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "name"))
    commit = vault.resolve(text(p, "rev")).decode()
    entries = vault.ls("", recursive=True, rev=commit)
    return {"commit": commit, "entries": [{"path": e.path, "kind": e.kind} for e in entries]}


@method("vaults.revert")
def vaults_revert(node: Node, p: Params) -> dict[str, Any]:
    return {"commit": node.vaults.open(text(p, "name")).revert(text(p, "rev")).decode()}


@method("vaults.retag")
def vaults_retag(node: Node, p: Params) -> dict[str, Any]:
    info = node.vaults.retag(text(p, "name"), texts(p, "add"), texts(p, "remove"))
    return {"name": info.name, "tags": info.tags}


# --- secrets -----------------------------------------------------------------------------------


@method("secrets.write")
def secrets_write(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "vault"))
    commit = vault.write(text(p, "path"), data(p, "data"))
    return {"vault": vault.name, "path": p["path"], "commit": commit.decode()}


@method("secrets.write_many")
def secrets_write_many(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "vault"))
    raw = p.get("items")
    if not isinstance(raw, list) or not all(
        isinstance(i, list) and len(i) == 2 and isinstance(i[0], str) and isinstance(i[1], bytes)
        for i in raw
    ):
        raise InvalidParams("items must be a list of [path, bytes] pairs")
    commit = vault.write_many([(i[0], i[1]) for i in raw], text(p, "message"))
    return {"count": len(raw), "commit": commit.decode()}


ENTRY_MARKERS = ("password", "otp", ".pass")
"""A folder directly holding one of these is an entry (interop/layout.py, docs/spec/entries.md)."""


@method("secrets.cat")
def secrets_cat(node: Node, p: Params) -> dict[str, Any]:
    """Each item's value as ``data``; with ``entries``, an item naming an entry's folder gives
    that folder's files instead, as ``files`` (name -> value), for `pk secrets cat` to show."""
    from polykey.vaults.errors import IsADirectory

    rev = opt_text(p, "rev")
    entries = flag(p, "entries")
    values: list[dict[str, Any]] = []
    for v, path in pairs(p, "items"):
        vault = node.vaults.open(v)
        try:
            values.append({"vault": v, "path": path, "data": vault.read(path, rev)})
        except IsADirectory:
            if not entries:
                raise
            values.append({"vault": v, "path": path, "files": _entry_files(vault, path, rev)})
    return {"secrets": values}


def _entry_files(vault: Vault, path: str, rev: str | None) -> dict[str, bytes]:
    from polykey.vaults.errors import IsADirectory

    names = {
        e.path.rsplit("/", 1)[-1]: e.blob
        for e in vault.ls(path, rev=rev)
        if e.kind == "secret" and e.blob is not None
    }
    if not any(name in names for name in ENTRY_MARKERS):
        where = f"{vault.name}:{path.strip('/')}"
        raise IsADirectory(
            f"{where} (a folder, not an entry: it holds no password, otp or .pass)",
            hint=f"List what it holds with `pk secrets ls {where}`, then name a secret in it.",
        )
    return {name: vault.read_blob(blob) for name, blob in names.items()}


@method("secrets.kind")
def secrets_kind(node: Node, p: Params) -> dict[str, Any]:
    """'secret', 'dir' or None; with ``entry``, a folder also says which of the files that make
    an entry (ENTRY_MARKERS) it holds, as ``markers``."""
    vault = node.vaults.open(text(p, "vault"))
    path = text(p, "path")
    kind = vault.kind(path)
    if kind == "dir" and flag(p, "entry"):
        names = {e.path.rsplit("/", 1)[-1] for e in vault.ls(path) if e.kind == "secret"}
        return {"kind": kind, "markers": [m for m in ENTRY_MARKERS if m in names]}
    return {"kind": kind}


@method("secrets.ls")
def secrets_ls(node: Node, p: Params) -> dict[str, Any]:
    tag = opt_text(p, "tag")
    vault_name = opt_text(p, "vault")
    rows: list[dict[str, str]] = []
    if tag is not None:
        unreadable: list[str] = []
        for info in node.vaults.all():
            if vault_name is not None and info.name != vault_name:
                continue
            for path, tags in sorted(_secret_tags(node, info.name, unreadable).items()):
                if tag in tags:
                    rows.append({"vault": info.name, "path": path, "kind": "secret"})
        if unreadable:
            return {"entries": rows, "unreadable_tags": unreadable}
    else:
        if vault_name is None:
            raise InvalidParams("name a vault, or a tag")
        vault = node.vaults.open(vault_name)
        for e in vault.ls(text(p, "path", optional=True), recursive=flag(p, "recursive")):
            rows.append({"vault": vault_name, "path": e.path, "kind": e.kind})
    return {"entries": rows}


@method("secrets.rm")
def secrets_rm(node: Node, p: Params) -> dict[str, Any]:
    groups: dict[str, list[str]] = {}
    for vault_name, path in pairs(p, "items"):
        groups.setdefault(vault_name, []).append(path)
    opened = {name: node.vaults.open(name) for name in groups}
    commits = {}
    with node.store.write() as tx:
        for name, paths in groups.items():
            commits[name] = opened[name].remove(paths, recursive=flag(p, "recursive"), tx=tx)
    return {"commits": {k: v.decode() for k, v in commits.items()}}


@method("secrets.move")
def secrets_move(node: Node, p: Params) -> dict[str, Any]:
    from polykey.vaults.vault import transfer

    svault, dvault = text(p, "src_vault"), text(p, "dst_vault")
    spath, dpath = text(p, "src_path"), text(p, "dst_path", optional=True)
    force, copy = flag(p, "force"), flag(p, "copy")
    source = node.vaults.open(svault)
    if svault == dvault:
        source.move_within(spath, dpath, force=force, copy=copy)
    else:
        transfer(source, spath, node.vaults.open(dvault), dpath, force=force, copy=copy)
    return {"copied" if copy else "moved": True}


@method("secrets.mkdir")
def secrets_mkdir(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "vault"))
    commit = vault.mkdir(text(p, "path"), parents=flag(p, "parents"))
    return {"vault": vault.name, "path": p["path"], "commit": commit.decode()}


@method("secrets.stat")
def secrets_stat(node: Node, p: Params) -> dict[str, Any]:
    st = node.vaults.open(text(p, "vault")).stat(text(p, "path"))
    return {"vault": p["vault"], **asdict(st)}


@method("secrets.history")
def secrets_history(node: Node, p: Params) -> dict[str, Any]:
    from polykey.vaults.errors import SecretNotFound

    vault = node.vaults.open(text(p, "vault"))
    path = text(p, "path")
    commits = vault.log(path=path)
    if not commits and vault.kind(path) is None:
        raise SecretNotFound(f"{vault.name}:{path}")
    return {"commits": [asdict(c) for c in commits]}


@method("secrets.find")
def secrets_find(node: Node, p: Params) -> dict[str, Any]:
    import fnmatch

    pattern = text(p, "pattern")
    only = texts(p, "vaults")
    glob = any(ch in pattern for ch in "*?[")
    needle = pattern.casefold()
    hits: list[dict[str, str]] = []
    for info in node.vaults.all():
        if only and info.name not in only:
            continue
        for e in node.vaults.open(info.name).ls("", recursive=True):
            if e.kind != "secret":
                continue
            name = e.path.casefold()
            if glob:
                ok = fnmatch.fnmatchcase(name, needle) or fnmatch.fnmatchcase(
                    name.rsplit("/", 1)[-1], needle
                )
            else:
                ok = needle in name
            if ok:
                hits.append({"vault": info.name, "path": e.path})
    return {"matches": hits}


@method("secrets.grep")
def secrets_grep(node: Node, p: Params) -> dict[str, Any]:
    import re

    try:
        regex = re.compile(
            text(p, "pattern").encode(), re.IGNORECASE if flag(p, "ignore_case") else 0
        )
    except re.error as exc:
        raise InvalidInput(f"bad regular expression: {exc}") from None
    only = texts(p, "vaults")
    hits: list[dict[str, str]] = []
    for info in node.vaults.all():
        if only and info.name not in only:
            continue
        vault = node.vaults.open(info.name)
        for e in vault.ls("", recursive=True):
            if e.kind != "secret" or e.blob is None:
                continue
            for line in vault.read_blob(e.blob).splitlines():
                if regex.search(line):
                    hits.append(
                        {
                            "vault": info.name,
                            "path": e.path,
                            "line": line.decode("utf-8", "replace"),
                        }
                    )
    return {"matches": hits}


@method("secrets.env")
def secrets_env(node: Node, p: Params) -> dict[str, Any]:
    """Every secret under each VAULT[:PATH] as (relative name, value), for `secrets env`."""
    out: list[list[Any]] = []
    for vault_name, path in pairs(p, "items"):
        vault = node.vaults.open(vault_name)
        if path and vault.kind(path) == "secret":
            out.append([vault_name, path, path.rsplit("/", 1)[-1], vault.read(path)])
            continue
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        for e in vault.ls(path, recursive=True):
            if e.kind == "secret" and e.blob is not None:
                out.append([vault_name, e.path, e.path[len(prefix) :], vault.read_blob(e.blob)])
    return {"secrets": out}


def _secret_tags(node: Node, vault: str, unreadable: list[str]) -> dict[str, list[str]]:
    """A vault's secret tags; a vault whose tag file is malformed (a writer's doing) reads as
    none and is named in ``unreadable``, so one bad vault does not hide the others' tags."""
    from polykey.vaults.errors import BadTagFile

    try:
        return node.vaults.open(vault).tags()
    except BadTagFile:
        unreadable.append(vault)
        return {}


@method("tags.list")
def tags_list(node: Node, p: Params) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {}
    unreadable: list[str] = []
    for info in node.vaults.all():
        for t in info.tags:
            counts.setdefault(t, {"secrets": 0, "vaults": 0})["vaults"] += 1
        for secret_tags in _secret_tags(node, info.name, unreadable).values():
            for t in secret_tags:
                counts.setdefault(t, {"secrets": 0, "vaults": 0})["secrets"] += 1
    result: dict[str, Any] = {"tags": {t: counts[t] for t in sorted(counts)}}
    if unreadable:
        result["unreadable_tags"] = unreadable
    return result


@method("tags.set")
def tags_set(node: Node, p: Params) -> dict[str, Any]:
    vault = node.vaults.open(text(p, "vault"))
    commit = vault.set_tags(text(p, "path"), texts(p, "add"), texts(p, "remove"))
    return {"vault": vault.name, "path": p["path"], "commit": commit.decode()}


# --- nodes and sharing -------------------------------------------------------------------------


def _node_id(p: Params, key: str = "node_id") -> Any:
    from polykey.ids import decode_node_id

    return decode_node_id(text(p, key))


@method("nodes.add")
def nodes_add(node: Node, p: Params) -> dict[str, Any]:
    from polykey.network.graph import parse_address

    address = parse_address(text(p, "address"))
    node.graph.add(_node_id(p), address)
    return {"node_id": p["node_id"], "address": str(address)}


@method("nodes.list")
def nodes_list(node: Node, p: Params) -> dict[str, Any]:
    return {"nodes": [{"node_id": k, "address": str(a)} for k, a in node.graph.all().items()]}


@method("nodes.rm")
def nodes_rm(node: Node, p: Params) -> dict[str, Any]:
    from polykey.network.graph import UnknownNode

    if not node.graph.remove(_node_id(p)):
        raise UnknownNode(text(p, "node_id"))
    return {"node_id": p["node_id"], "removed": True}


@method("nodes.ping")
def nodes_ping(node: Node, p: Params) -> dict[str, Any]:
    import time

    started = time.perf_counter()
    reply = node.peers.hello(_node_id(p))
    return {**reply, "ms": round((time.perf_counter() - started) * 1000, 1)}


@method("vaults.share")
def vaults_share(node: Node, p: Params) -> dict[str, Any]:
    from polykey.trust.acl import DEFAULT

    info = node.vaults.info(text(p, "name"))
    perms = texts(p, "permissions") or list(DEFAULT)
    granted = node.acl.grant(info.id, _node_id(p), perms)
    note = f"Vault {info.name} ({info.id}) is shared with you: {', '.join(granted)}."
    try:  # tell the node; queued in the outbox when it cannot be reached now
        from polykey.network.graph import UnknownNode

        delivery = node.notifications.send(_node_id(p), note)
    except UnknownNode:
        delivery = {"delivered": False, "queued": False}
    return {"vault": info.name, "node_id": p["node_id"], "permissions": granted, **delivery}


@method("vaults.unshare")
def vaults_unshare(node: Node, p: Params) -> dict[str, Any]:
    info = node.vaults.info(text(p, "name"))
    revoked = node.acl.revoke(info.id, _node_id(p))
    return {"vault": info.name, "node_id": p["node_id"], "revoked": revoked}


@method("vaults.permissions")
def vaults_permissions(node: Node, p: Params) -> dict[str, Any]:
    info = node.vaults.info(text(p, "name"))
    return {"vault": info.name, "permissions": node.acl.grants(info.id)}


@method("vaults.scan")
def vaults_scan(node: Node, p: Params) -> dict[str, Any]:
    from polykey.sync.client import scan

    return {"vaults": scan(node.peers, _node_id(p))}


@method("vaults.clone")
def vaults_clone(node: Node, p: Params) -> dict[str, Any]:
    from polykey.sync.client import clone

    info = clone(node.vaults, node.peers, _node_id(p), text(p, "vault"), opt_text(p, "name"))
    return {"name": info.name, "id": info.id, "origin": info.origin}


@method("vaults.pull")
def vaults_pull(node: Node, p: Params) -> dict[str, Any]:
    from polykey.sync.client import pull, pull_many

    name = opt_text(p, "name")
    if name:
        return {"pulled": [pull(node.vaults, node.peers, name)]}
    names = [i.name for i in node.vaults.all() if i.origin]
    return {"pulled": pull_many(node.vaults, node.peers, names)}


@method("vaults.push")
def vaults_push(node: Node, p: Params) -> dict[str, Any]:
    from polykey.sync.client import push

    return push(node.vaults, node.peers, text(p, "name"), _node_id(p))


@method("notifications.send")
def notifications_send(node: Node, p: Params) -> dict[str, Any]:
    return node.notifications.send(_node_id(p), text(p, "message"))


@method("notifications.read")
def notifications_read(node: Node, p: Params) -> dict[str, Any]:
    inbox = node.notifications
    return {"notifications": inbox.read(flag(p, "unread")), "outbox": inbox.outbox()}


@method("notifications.clear")
def notifications_clear(node: Node, p: Params) -> dict[str, Any]:
    return {"cleared": node.notifications.clear()}


@method("keys.openssh_private")
def keys_openssh_private(node: Node, p: Params) -> dict[str, Any]:
    return {"pem": node.key.signing.openssh_private_pem()}


@method("nodes.connections")
def nodes_connections(node: Node, p: Params) -> dict[str, Any]:
    return {"connections": node.peers.connections()}


@method("secrets.complete")
def secrets_complete(node: Node, p: Params) -> dict[str, Any]:
    """Shell completion (cli/completion.py): without ``vault``, the vault names starting with
    ``path``; with it, the paths of that vault in the folder ``path`` ends in (up to its last
    '/') that start with ``path``, a folder's with a final '/'. One a line, as bytes (the hot
    path decodes no JSON); nothing for a vault or folder that is not there."""
    import stat

    from polykey.vaults.paths import split_path

    prefix = text(p, "path", optional=True)
    vault_name = opt_text(p, "vault")
    if vault_name is None:
        names = [i.name for i in node.vaults.all() if i.name.startswith(prefix)]
        return {"data": "".join(f"{name}\n" for name in names).encode()}
    folder, slash, start = prefix.rpartition("/")
    found: list[bytes] = []
    try:
        vault = node.vaults.open(vault_name)
        objects = vault.objects()
        entry = vault.lookup(split_path(folder, allow_root=True), objects=objects)
    except PolykeyError:
        entry = None
    if entry is not None and stat.S_ISDIR(entry[0]):  # a folder may be large: no Entry objects
        base, wanted, kind = (folder + slash).encode(), start.encode(), stat.S_IFMT
        found = [
            base + name + (b"/\n" if kind(mode) == stat.S_IFDIR else b"\n")
            for name, mode, _ in objects.get_tree(entry[1]).iteritems()
            if name.startswith(wanted) and not name.startswith(b".polykey")
        ]
    return {"data": b"".join(found)}


@method("vaults.signers")
def vaults_signers(node: Node, p: Params) -> dict[str, Any]:
    """The nodes whose signed commits a vault takes (its writers), for git's allowed signers:
    of this node's vault (agent/transfer.py's ``vault_writers``), or with ``node_id``, of that
    node's vault as it names them (a fetch, as `pk vaults clone` makes: the node and the writers
    it names)."""
    from polykey.agent.transfer import vault_writers

    name = text(p, "name")
    if p.get("node_id") is None:
        return {"vault": node.vaults.info(name).name, "writers": vault_writers(node, name)}
    from polykey.ids import encode_node_id
    from polykey.sync.client import remote_writers

    peer = _node_id(p)
    return {"node_id": encode_node_id(peer), **remote_writers(node.peers, peer, name)}


# The import and export methods live in their own module; importing it registers them.
from polykey.agent import transfer as _transfer  # noqa: E402, F401
