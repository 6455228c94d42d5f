"""The methods behind `pk import` and `pk export`: a whole import lands in one transaction (all
of it or none), and an export reads a vault (or a folder of it) in one go."""

from __future__ import annotations

from typing import Any

from polykey.agent.methods import InvalidParams, Params, flag, method, opt_text, text, texts
from polykey.node import Node
from polykey.vaults import tree as trees
from polykey.vaults.errors import SecretExists, VaultNotFound
from polykey.vaults.objects import VaultObjects
from polykey.vaults.paths import fold, join, split_path
from polykey.vaults.tags import check_tag

Commits = list[tuple[str, list[tuple[str, bytes]], dict[str, list[str]]]]


def _commits(p: Params) -> Commits:
    raw = p.get("commits")
    if not isinstance(raw, list) or not raw:
        raise InvalidParams("commits must be a non-empty list")
    out: Commits = []
    for c in raw:
        if not (isinstance(c, list | tuple) and len(c) == 3 and isinstance(c[0], str)):
            raise InvalidParams("each commit is [message, items, tags]")
        items, tags = c[1], c[2]
        if not isinstance(items, list) or not all(
            isinstance(i, list | tuple)
            and len(i) == 2
            and isinstance(i[0], str)
            and type(i[1]) is bytes
            for i in items
        ):
            raise InvalidParams("items must be a list of [path, bytes] pairs")
        if not isinstance(tags, dict) or not all(
            isinstance(v, list) and all(isinstance(t, str) for t in v) for v in tags.values()
        ):
            raise InvalidParams("tags must map paths to lists of tags")
        out.append((c[0], [(i[0], i[1]) for i in items], tags))
    return out


def _check(existing: dict[str, str], commits: Commits, vault: str, overwrite: bool) -> None:
    """Refuse paths that exist (unless ``overwrite``) or that would turn a secret into a folder."""
    new: dict[str, str] = {}
    for _, items, tags in commits:
        for path, _ in items:
            parts = split_path(path)
            key = fold(join(parts))
            kind = existing.get(key) or new.get(key)
            if kind == "dir" or (kind == "secret" and not overwrite and key in existing):
                raise SecretExists(
                    f"{vault}:{join(parts)}",
                    hint="Import into a new vault or folder (--vault V:DIR), or add --overwrite.",
                )
            for i in range(1, len(parts)):
                parent = fold(join(parts[:i]))
                if (existing.get(parent) or new.get(parent)) == "secret":
                    raise SecretExists(
                        f"{vault}:{join(parts[:i])} is a secret, not a folder",
                        hint="Import into another folder with --vault V:DIR.",
                    )
                new[parent] = "dir"
            new[key] = "secret"
        for tag_list in tags.values():
            for t in tag_list:
                check_tag(t)


@method("vaults.import")
def vaults_import(node: Node, p: Params) -> dict[str, Any]:
    """Write imported entries: each commit is (message, [path, value] items, tags by path).

    With ``overwrite``, existing secrets at the same paths are replaced, and so is each folder
    named in ``replace`` (an entry's folder): its secrets the import does not bring are removed.
    ``dry_run`` makes every check and writes nothing.
    """
    name = text(p, "vault")
    commits = _commits(p)
    overwrite = flag(p, "overwrite")
    replace = [join(split_path(f)) for f in texts(p, "replace")] if overwrite else []
    try:
        vault = node.vaults.open(name)
    except VaultNotFound:
        if not flag(p, "create"):
            raise
        vault = None
    listing = vault.ls("", recursive=True) if vault is not None else []
    existing = {fold(e.path): e.kind for e in listing}
    _check(existing, commits, name, overwrite)
    incoming = {fold(join(split_path(path))) for _, items, _ in commits for path, _ in items}
    folders = tuple(fold(f) + "/" for f in replace)
    stale = (
        [
            e.path
            for e in listing
            if e.kind == "secret"
            and fold(e.path).startswith(folders)
            and fold(e.path) not in incoming
        ]
        if folders
        else []
    )
    count = sum(len(items) for _, items, _ in commits)
    if flag(p, "dry_run"):
        paths = sorted(path for _, items, _ in commits for path, _ in items)
        return {"vault": name, "created": vault is None, "secrets": count, "commits": 0,
                "paths": paths, "removed": stale, "dry_run": True}  # fmt: skip
    created = vault is None
    if vault is None:
        vault = node.vaults.create(name)
    try:
        heads = []
        with node.store.write() as tx:
            for n, (message, items, tags) in enumerate(commits):
                split = [(split_path(path), value) for path, value in items]
                gone = [split_path(path) for path in stale] if n == 0 else []
                keyed = {join(split_path(k)): sorted(set(v)) for k, v in tags.items() if v}

                def build(
                    objects: VaultObjects, _: bytes, split: Any = split, gone: Any = gone
                ) -> list[tuple[tuple[str, ...], trees.Op]]:
                    ops: list[tuple[tuple[str, ...], trees.Op]] = [
                        (parts, trees.Delete()) for parts in gone
                    ]
                    return ops + [(parts, trees.Put(objects.add_blob(v))) for parts, v in split]

                def retag(
                    current: dict[str, list[str]], keyed: Any = keyed
                ) -> dict[str, list[str]]:
                    return {**current, **keyed}

                heads.append(vault.commit(build, message, tags=retag, tx=tx))
    except BaseException:
        if created:
            node.vaults.remove(name)
        raise
    return {
        "vault": vault.name,
        "created": created,
        "secrets": count,
        "removed": stale,
        "commits": len(heads),
        "commit": heads[-1].decode() if heads else None,
    }


@method("vaults.export")
def vaults_export(node: Node, p: Params) -> dict[str, Any]:
    """Every secret of a vault (or under PATH) with its value, and the vault's tags."""
    vault = node.vaults.open(text(p, "vault"))
    path = opt_text(p, "path") or ""
    rev = opt_text(p, "rev")
    head = vault.resolve(rev)
    prefix = join(split_path(path)) + "/" if path.strip("/") else ""
    files = [
        [e.path[len(prefix) :], vault.read_blob(e.blob)]
        for e in vault.ls(path, recursive=True, rev=rev)
        if e.kind == "secret" and e.blob is not None
    ]
    tags = {
        k[len(prefix) :]: v
        for k, v in vault.tags(rev).items()
        if k.startswith(prefix) and k != prefix.rstrip("/")
    }
    return {"vault": vault.name, "head": head.decode(), "files": files, "tags": tags}


@method("vaults.objects")
def vaults_objects(node: Node, p: Params) -> dict[str, Any]:
    """Every git object of a vault's history (type byte + raw body), and its writers (the
    allowed signers of `export git`)."""
    from polykey.sync.server import collect

    vault = node.vaults.open(text(p, "vault"))
    writers = vault_writers(node, vault.name)
    head = vault.head()
    if head is None:
        return {"vault": vault.name, "head": None, "objects": [], "writers": writers}
    return {
        "vault": vault.name,
        "head": head.decode(),
        "objects": collect(vault.objects(), head, set()),
        "writers": writers,
    }


def vault_writers(node: Node, name: str) -> list[str]:
    """The NodeIds whose commits the vault takes: this node, the nodes granted `push` on it, and
    for a clone the node it was cloned from. Never read from the commits themselves."""
    from polykey.ids import encode_node_id

    info = node.vaults.info(name)
    writers = {encode_node_id(node.node_id), *node.acl.writers(info.id)}
    if info.origin.get("node_id"):
        writers.add(str(info.origin["node_id"]))
        writers |= set(str(info.origin.get("writers", "")).split())
    return sorted(writers)
