"""Editing git trees: a batch of puts, deletes and mkdirs becomes new trees, checked as it goes.

Only two kinds of entry exist in a vault: secrets (mode 100644 blobs) and directories (trees).
An empty directory made with mkdir holds the reserved empty blob ``.polykey-dir``.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass
from typing import Union, cast

from dulwich.objects import Blob, ObjectID, Tree

from polykey.vaults.errors import (
    IsADirectory,
    NameCollision,
    NotADirectory,
    SecretNotFound,
)
from polykey.vaults.objects import VaultObjects
from polykey.vaults.paths import fold, join

FILE_MODE = 0o100644
DIR_MODE = 0o040000
DIR_MARKER = b".polykey-dir"


@dataclass(frozen=True)
class Put:
    blob: bytes  # hex id of a blob already added


@dataclass(frozen=True)
class Delete:
    recursive: bool = False


@dataclass(frozen=True)
class MkDir:
    parents: bool = True


Op = Put | Delete | MkDir
Plan = dict[str, Union[Op, "Plan"]]


def plan(changes: list[tuple[tuple[str, ...], Op]]) -> Plan:
    """Nest path operations by directory; a later change to one path wins."""
    root: Plan = {}
    for parts, op in changes:
        node = root
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if not isinstance(child, dict):
                if child is not None:
                    raise NotADirectory(join(parts[: i + 1]))
                child = {}
                node[part] = child
            node = child
        leaf = parts[-1]
        if isinstance(node.get(leaf), dict) and isinstance(op, Put):
            raise IsADirectory(join(parts))
        node[leaf] = op
    return root


def apply(objects: VaultObjects, tree_id: bytes | None, changes: Plan, prefix: str = "") -> bytes:
    """The id of the tree that results from applying ``changes`` (the root always exists)."""
    result = _apply(objects, tree_id, changes, prefix)
    if result is None:
        return objects.add(Tree())
    return result


def _apply(
    objects: VaultObjects, tree_id: bytes | None, changes: Plan, prefix: str
) -> bytes | None:
    entries: dict[bytes, tuple[int, bytes]] = {}
    if tree_id is not None:
        for item in objects.get_tree(tree_id).iteritems():
            entries[item.path] = (item.mode, item.sha)
    folded: dict[str, bytes] | None = None
    for name, op in changes.items():
        key = name.encode("utf-8")
        path = f"{prefix}{name}"
        existing = entries.get(key)
        is_dir = existing is not None and stat.S_ISDIR(existing[0])
        if existing is None and not isinstance(op, Delete):
            if folded is None:
                folded = {fold(k.decode("utf-8", "replace")): k for k in entries}
            clash = folded.get(fold(name))
            if clash is not None:
                raise NameCollision(f"{path} (already: {prefix}{clash.decode(errors='replace')})")
            folded[fold(name)] = key
        if isinstance(op, dict):
            if existing is not None and not is_dir:
                raise NotADirectory(path)
            sub = _apply(objects, existing[1] if existing else None, op, path + "/")
            _set(entries, key, DIR_MODE, sub)
        elif isinstance(op, Put):
            if is_dir:
                raise IsADirectory(path)
            entries[key] = (FILE_MODE, op.blob)
        elif isinstance(op, Delete):
            if existing is None:
                raise SecretNotFound(path)
            if is_dir and not op.recursive:
                raise IsADirectory(path)
            del entries[key]
        else:  # MkDir
            if existing is not None and not is_dir:
                raise NotADirectory(path)
            if existing is None:
                marker = objects.add(Blob.from_string(b""))
                sub_tree = Tree()
                sub_tree.add(DIR_MARKER, FILE_MODE, cast(ObjectID, marker))
                entries[key] = (DIR_MODE, objects.add(sub_tree))
    if not entries:
        return None
    tree = Tree()
    for key, (mode, sha) in entries.items():
        tree.add(key, mode, cast(ObjectID, sha))
    return objects.add(tree)


def _set(entries: dict[bytes, tuple[int, bytes]], key: bytes, mode: int, sha: bytes | None) -> None:
    if sha is None:
        entries.pop(key, None)
    else:
        entries[key] = (mode, sha)
