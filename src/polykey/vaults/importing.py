"""An import lands whole or not at all: every path is checked against the vault (and the rest
of the import) first, then every commit is written in one transaction.

The entries come laid out already (interop/, docs/spec/entries.md): each commit is a message,
its (path, value) items, and tags by path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from polykey.vaults import tree as trees
from polykey.vaults.errors import SecretExists, VaultNotFound
from polykey.vaults.paths import fold, join, split_path
from polykey.vaults.tags import check_tag

if TYPE_CHECKING:
    from polykey.vaults.objects import VaultObjects
    from polykey.vaults.registry import Vaults
    from polykey.vaults.vault import Vault

ImportCommit = tuple[str, list[tuple[str, bytes]], dict[str, list[str]]]
"""(message, [(path, value)], {path: tags}): one commit of an import."""

Ops = list[tuple[tuple[str, ...], trees.Op]]


@dataclass(frozen=True)
class Imported:
    """What an import wrote, or with ``dry_run`` would write."""

    vault: str
    created: bool  # the vault did not exist (with dry_run: would be created)
    secrets: int
    removed: list[str]  # secrets of replaced folders that the import does not bring
    paths: list[str]  # every path the import writes, sorted
    commits: list[str]  # the commits made, oldest first (none for a dry run)
    dry_run: bool


def check_collisions(
    existing: dict[str, str], commits: list[ImportCommit], vault: str, overwrite: bool
) -> None:
    """Refuse paths that exist (unless ``overwrite``), or that would turn a secret into a folder
    or a folder into a secret, in the vault (``existing``: folded path -> "secret" or "dir") or
    within the import itself; and tags that are not valid."""
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


def import_commits(
    vaults: Vaults,
    name: str,
    commits: list[ImportCommit],
    *,
    create: bool = False,
    overwrite: bool = False,
    replace: list[str] | tuple[str, ...] = (),
    dry_run: bool = False,
) -> Imported:
    """Write ``commits`` into the vault ``name`` (made first with ``create``) in one
    transaction; a vault made here is removed again if the import fails.

    With ``overwrite``, existing secrets at the same paths are replaced, and so is each folder
    named in ``replace`` (an entry's folder): its secrets the import does not bring are removed
    (in the first commit). ``dry_run`` makes every check and writes nothing.
    """
    folders = tuple(fold(join(split_path(f))) + "/" for f in replace) if overwrite else ()
    vault: Vault | None
    try:
        vault = vaults.open(name)
    except VaultNotFound:
        if not create:
            raise
        vault = None
    listing = vault.ls("", recursive=True) if vault is not None else []
    check_collisions({fold(e.path): e.kind for e in listing}, commits, name, overwrite)
    incoming = {fold(join(split_path(path))) for _, items, _ in commits for path, _ in items}
    stale = [
        e.path
        for e in listing
        if folders
        and e.kind == "secret"
        and fold(e.path).startswith(folders)
        and fold(e.path) not in incoming
    ]
    count = sum(len(items) for _, items, _ in commits)
    paths = sorted(path for _, items, _ in commits for path, _ in items)
    if dry_run:
        return Imported(name, vault is None, count, stale, paths, [], dry_run=True)
    created = vault is None
    if vault is None:
        vault = vaults.create(name)
    try:
        heads = _write(vaults, vault, commits, stale)
    except BaseException:
        if created:
            vaults.remove(name)
        raise
    return Imported(vault.name, created, count, stale, paths, heads, dry_run=False)


def _write(
    vaults: Vaults, vault: Vault, commits: list[ImportCommit], stale: list[str]
) -> list[str]:
    heads: list[str] = []
    with vaults.store.write() as tx:
        for n, (message, items, tags) in enumerate(commits):
            split = [(split_path(path), value) for path, value in items]
            gone = [split_path(path) for path in stale] if n == 0 else []
            keyed = {join(split_path(k)): sorted(set(v)) for k, v in tags.items() if v}

            def build(
                objects: VaultObjects,
                _: bytes,
                split: list[tuple[tuple[str, ...], bytes]] = split,
                gone: list[tuple[str, ...]] = gone,
            ) -> Ops:
                ops: Ops = [(parts, trees.Delete()) for parts in gone]
                return ops + [(parts, trees.Put(objects.add_blob(v))) for parts, v in split]

            def retag(
                current: dict[str, list[str]], keyed: dict[str, list[str]] = keyed
            ) -> dict[str, list[str]]:
                return {**current, **keyed}

            heads.append(vault.commit(build, message, tags=retag, tx=tx).decode())
    return heads
