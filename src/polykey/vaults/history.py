"""Comparing two trees of a vault: which secrets were added, changed or removed.

dulwich's ``tree_changes`` does the walk; every folder it opens is read as a tree
(BrokenHistory otherwise). Reserved entries (``.polykey*``) are not secrets and are left out;
a secret replaced by a folder is its deletion and the additions of what the folder holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

from dulwich.objects import ObjectID, Tree

from polykey.vaults.objects import VaultObjects
from polykey.vaults.paths import RESERVED_PREFIX
from polykey.vaults.store import TypedObjects

_RESERVED = RESERVED_PREFIX.encode()


@dataclass(frozen=True)
class Change:
    kind: str  # "add", "modify" or "delete"
    path: str
    old: bytes | None
    new: bytes | None


def diff_trees(
    objects: VaultObjects, t1: bytes | None, t2: bytes | None, prefix: str = ""
) -> list[Change]:
    """The changes from tree ``t1`` to tree ``t2`` (None: empty), paths after ``prefix``."""
    from dulwich.diff_tree import tree_changes

    if t1 == t2:
        return []
    folders = TypedObjects(objects, Tree.type_num)  # dulwich reads only the folders it opens
    out: list[Change] = []
    for change in tree_changes(folders, cast(ObjectID, t1), cast(ObjectID, t2)):
        entry = change.new if change.old is None else change.old
        assert entry is not None and entry.path is not None
        if any(part.startswith(_RESERVED) for part in entry.path.split(b"/")):
            continue
        path = prefix + entry.path.decode("utf-8", "replace")
        old = change.old.sha if change.old is not None else None
        new = change.new.sha if change.new is not None else None
        out.append(Change(change.type, path, old, new))
    return out
