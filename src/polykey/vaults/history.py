"""Comparing two trees of a vault: which secrets were added, changed or removed."""

from __future__ import annotations

import stat
from dataclasses import dataclass

from polykey.vaults.objects import VaultObjects


@dataclass(frozen=True)
class Change:
    kind: str  # "add", "modify" or "delete"
    path: str
    old: bytes | None
    new: bytes | None


def diff_trees(
    objects: VaultObjects, t1: bytes | None, t2: bytes | None, prefix: str
) -> list[Change]:
    if t1 == t2:
        return []
    a = {i.path: (i.mode, i.sha) for i in objects.get_tree(t1).iteritems()} if t1 else {}
    b = {i.path: (i.mode, i.sha) for i in objects.get_tree(t2).iteritems()} if t2 else {}
    out: list[Change] = []
    for name in sorted(set(a) | set(b)):
        text = name.decode("utf-8", "replace")
        if text.startswith(".polykey"):
            continue
        path = prefix + text
        old, new = a.get(name), b.get(name)
        if old == new:
            continue
        old_dir = old is not None and stat.S_ISDIR(old[0])
        new_dir = new is not None and stat.S_ISDIR(new[0])
        if old_dir or new_dir:
            out.extend(
                diff_trees(
                    objects,
                    old[1] if old and old_dir else None,
                    new[1] if new and new_dir else None,
                    path + "/",
                )
            )
            if old is not None and not old_dir:
                out.append(Change("delete", path, old[1], None))
            if new is not None and not new_dir:
                out.append(Change("add", path, None, new[1]))
            continue
        if old is None:
            out.append(Change("add", path, None, new[1] if new else None))
        elif new is None:
            out.append(Change("delete", path, old[1], None))
        else:
            out.append(Change("modify", path, old[1], new[1]))
    return out
