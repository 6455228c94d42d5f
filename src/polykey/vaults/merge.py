"""Merging two histories of one vault, a secret at a time, in memory (docs/spec/merge.md).

dulwich's tree merge (``dulwich.merge.Merger``) walks the three trees and settles every path
only one side changed; its blob merge is replaced by a driver of our own that never merges the
bytes of a secret (no conflict markers inside a password): it reports the conflict, and this
module settles every conflict by rules that give the same tree whichever side merges:

- both sides changed a secret differently: the newer change stays at the path (the time of the
  newest commit on that side that touched it; ties by the NodeId that made it, then by the
  value's id) and the other is kept beside it as ``PATH.conflict-<8 of NodeId>-<UTC time>``,
  named after the node that made it and when;
- a change against a deletion: the change wins (inside a folder, secret by secret);
- a secret against a folder: the folder stays, the secret goes to a conflict copy;
- the tags (``.polykey-tags``) merge path by path, tag by tag: a tag one side added is added,
  one side removed is removed; a copy carries the tags its value had;
- two names that differ only by case or normalisation, added one on each side: the later one
  (by the same order) moves to a conflict copy.

A merge of the same two heads gives the same tree on every node. ``redundant`` tells when a merge
commit adds nothing to another head (two nodes merged the same pair at once): such a head may be
replaced by its twin without losing anything, which is how two nodes stop merging each other's
merges.
"""

from __future__ import annotations

import datetime
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dulwich.merge import Merger
from dulwich.objects import Blob, Commit, ObjectID, Tree

from polykey.vaults.paths import MAX_COMPONENT_BYTES, RESERVED_PREFIX, fold
from polykey.vaults.tags import try_read_tags, write_tags

if TYPE_CHECKING:
    from polykey.vaults.objects import VaultObjects
    from polykey.vaults.store import SealedObjectStore
    from polykey.vaults.tree import Op
    from polykey.vaults.vault import Vault

COPY_MARK = ".conflict-"
_RESERVED = RESERVED_PREFIX.encode()
Entry = tuple[int, bytes]  # (mode, hex id)


@dataclass(frozen=True)
class Conflict:
    """One path both sides changed: the value kept at ``path`` and the one moved to ``copy``."""

    path: str
    copy: str
    kept_by: str  # the NodeId whose change stays at the path
    copied_by: str  # the NodeId whose change went to the copy
    kind: str = "changed"  # "changed", "file-folder" or "case"
    side: str = field(default="theirs", compare=False)  # the side whose value was copied

    def trailer(self) -> str:
        return f"Conflict: {self.path} -> {self.copy}"


@dataclass(frozen=True)
class Change:
    """Who last changed a path on one side, and when (what decides a conflict)."""

    time: int
    node: str
    value: bytes

    def key(self) -> tuple[int, str, bytes]:
        return (self.time, self.node, self.value)


@dataclass
class TreeMerge:
    tree: bytes
    conflicts: list[Conflict] = field(default_factory=list)


def merge_base(store: SealedObjectStore, ours: bytes, theirs: bytes) -> bytes | None:
    """The common ancestor the merge starts from (the smallest id when there are several, so
    every node picks the same); None for unrelated histories."""
    from dulwich.graph import find_merge_base

    from polykey.vaults.repo import VaultRepo

    repo = VaultRepo(store.objects, shared=True)
    bases = find_merge_base(repo, [ObjectID(ours), ObjectID(theirs)])
    return min(bases) if bases else None


def merge_trees(
    objects: VaultObjects, store: SealedObjectStore, ours: bytes, theirs: bytes
) -> TreeMerge:
    """The merged tree of the commits ``ours`` and ``theirs`` (objects are added to ``store``,
    which is bound to the write transaction) and the conflicts it settled."""
    base = merge_base(store, ours, theirs)
    ours_c, theirs_c = objects.get_commit(ours), objects.get_commit(theirs)
    base_tree = objects.get_tree(objects.get_commit(base).tree) if base is not None else None
    sides = {
        "ours": _Side(objects, store, ours, base),
        "theirs": _Side(objects, store, theirs, base),
    }
    settler = _Settler(objects, store, sides)
    merged = settler.tree(
        base_tree, objects.get_tree(ours_c.tree), objects.get_tree(theirs_c.tree), ()
    )
    result = TreeMerge(merged.id, sorted(settler.conflicts, key=lambda c: c.path))
    tags = _merged_tags(
        objects, base_tree, ours_c.tree, theirs_c.tree, merged.id, settler.conflicts
    )
    if tags is not None:
        result.tree = write_tags(objects, merged.id, tags)
    return result


class _Side:
    """One side of a merge: its head, and the newest change it made to a path since the base."""

    def __init__(
        self, objects: VaultObjects, store: SealedObjectStore, head: bytes, base: bytes | None
    ) -> None:
        self.objects = objects
        self.store = store
        self.head = head
        self.base = base

    def change(self, path: tuple[str, ...], value: bytes) -> Change:
        """The commit on this side since the base that brought ``value`` to ``path`` (the
        newest one; the head when none did, as after a rename)."""
        from dulwich.walk import Walker

        from polykey.vaults.store import TypedObjects

        commits = TypedObjects(self.objects, Commit.type_num)
        exclude = [ObjectID(self.base)] if self.base is not None else []
        for entry in Walker(commits, [ObjectID(self.head)], exclude=exclude):
            commit = entry.commit
            if _at(self.objects, commit.tree, path) != value:
                continue
            parents = [self.objects.get_commit(p).tree for p in commit.parents]
            if all(_at(self.objects, tree, path) != value for tree in parents):
                return _change_of(commit, value)
        return _change_of(self.objects.get_commit(self.head), value)


def _at(objects: VaultObjects, tree_id: bytes, path: tuple[str, ...]) -> bytes | None:
    """The id of what ``path`` names in the tree, or None."""
    sha = tree_id
    for i, part in enumerate(path):
        tree = objects.get_tree(sha)
        name = part.encode("utf-8", "surrogateescape")
        if name not in tree:
            return None
        mode, found = tree[name]
        if i < len(path) - 1 and not stat.S_ISDIR(mode):
            return None
        sha = found
    return bytes(sha)


def _change_of(commit: Commit, value: bytes) -> Change:
    author = commit.author.split(b" <", 1)[0].decode("utf-8", "replace")
    return Change(int(commit.commit_time), author, value)


class _Driver(Merger):
    """dulwich's tree merge with our blob driver: two different values of a secret are never
    merged into one; the path is reported and settled by ``_Settler``."""

    def merge_blobs(
        self,
        base_blob: Blob | None,
        ours_blob: Blob | None,
        theirs_blob: Blob | None,
        path: bytes | None = None,
    ) -> tuple[bytes, bool]:
        if ours_blob is not None and theirs_blob is not None and ours_blob.id == theirs_blob.id:
            return ours_blob.as_raw_string(), False
        kept = ours_blob if ours_blob is not None else theirs_blob
        return (kept.as_raw_string() if kept is not None else b""), True


class _Settler:
    """Runs dulwich's merge of one folder and settles what it reports, recursing where a
    folder meets a deletion or a secret; ``conflicts`` collects what it settled."""

    def __init__(
        self, objects: VaultObjects, store: SealedObjectStore, sides: dict[str, _Side]
    ) -> None:
        self.objects = objects
        self.store = store
        self.sides = sides
        self.conflicts: list[Conflict] = []

    def tree(self, base: Tree | None, ours: Tree, theirs: Tree, at: tuple[str, ...]) -> Tree:
        return self._tree(base, ours, theirs, at)

    def _tree(self, base: Tree | None, ours: Tree, theirs: Tree, at: tuple[str, ...]) -> Tree:
        driver = _Driver(self.store)
        prefix = "/".join(at).encode()
        merged, _ = driver._merge_trees(base, ours, theirs, prefix)
        entries: dict[bytes, Entry] = {e.path: (e.mode, e.sha) for e in merged.items()}
        for full, info in sorted(driver.conflict_info.items()):
            parts = full.decode("utf-8", "surrogateescape").split("/")
            if parts[:-1] != list(at):  # a deeper conflict: only a direct one is settled here
                continue
            self._settle(entries, parts[-1].encode(), info.ancestor, info.ours, info.theirs, at)
        deeper = {
            full.split(b"/")[len(at)] for full in driver.conflict_info if full.count(b"/") > len(at)
        }
        for name in sorted(deeper):
            # dulwich recursed into a folder both sides changed and met conflicts there:
            # that folder is merged again by these rules
            entries[name] = self._folder(base, ours, theirs, name, at)
        self._separate_cases(entries, ours, theirs, at)
        out = Tree()
        for name, (mode, sha) in sorted(entries.items()):
            out.add(name, mode, ObjectID(sha))
        self.store.add_object(out)
        return out

    def _folder(
        self, base: Tree | None, ours: Tree, theirs: Tree, name: bytes, at: tuple[str, ...]
    ) -> Entry:
        sub = self._tree(
            self._sub(base, name),
            self._sub(ours, name) or Tree(),
            self._sub(theirs, name) or Tree(),
            (*at, name.decode("utf-8", "surrogateescape")),
        )
        return (stat.S_IFDIR, sub.id)

    def _sub(self, tree: Tree | None, name: bytes) -> Tree | None:
        if tree is None or name not in tree:
            return None
        mode, sha = tree[name]
        return self.objects.get_tree(sha) if stat.S_ISDIR(mode) else None

    def _settle(
        self,
        entries: dict[bytes, Entry],
        name: bytes,
        base: tuple[int | None, bytes | None],
        ours: tuple[int | None, bytes | None],
        theirs: tuple[int | None, bytes | None],
        at: tuple[str, ...],
    ) -> None:
        """One path dulwich could not merge, settled the same whichever side is ours."""
        path = (*at, name.decode("utf-8", "surrogateescape"))
        o, t = _entry(ours), _entry(theirs)
        base_tree = (
            self.objects.get_tree(base[1])
            if base[1] is not None and stat.S_ISDIR(base[0] or 0)
            else None
        )
        if name.startswith(_RESERVED):  # the vault's own files: tags merge below, markers stay
            kept = o or t
            if kept is not None:
                entries[name] = kept
            return
        if o is None or t is None:  # a change against a deletion: the change wins
            present = o or t
            assert present is not None
            if stat.S_ISDIR(present[0]):
                sub = self._tree(
                    base_tree,
                    self.objects.get_tree(o[1]) if o else Tree(),
                    self.objects.get_tree(t[1]) if t else Tree(),
                    path,
                )
                entries[name] = (stat.S_IFDIR, sub.id)
            else:
                entries[name] = present
            return
        o_dir, t_dir = stat.S_ISDIR(o[0]), stat.S_ISDIR(t[0])
        if o_dir and t_dir:  # cannot happen (dulwich recurses), but settle it the same way
            sub = self._tree(
                base_tree, self.objects.get_tree(o[1]), self.objects.get_tree(t[1]), path
            )
            entries[name] = (stat.S_IFDIR, sub.id)
            return
        if o_dir or t_dir:  # a folder against a secret: the folder stays, the secret moves
            folder, secret, side = (o, t, "theirs") if o_dir else (t, o, "ours")
            other_side = "ours" if side == "theirs" else "theirs"
            empty_side = Tree()
            if o_dir:
                sub = self._tree(base_tree, self.objects.get_tree(folder[1]), empty_side, path)
            else:
                sub = self._tree(base_tree, empty_side, self.objects.get_tree(folder[1]), path)
            entries[name] = (stat.S_IFDIR, sub.id)
            moved = self.sides[side].change(path, secret[1])
            kept_by = self.sides[other_side].change(path, folder[1]).node
            self._copy(entries, name, secret, moved, kept_by, at, "file-folder", side)
            return
        mine = self.sides["ours"].change(path, o[1])
        yours = self.sides["theirs"].change(path, t[1])
        (win, win_entry, _), (lose, lose_entry, lose_side) = sorted(
            [(mine, o, "ours"), (yours, t, "theirs")], key=lambda x: x[0].key(), reverse=True
        )
        entries[name] = win_entry
        self._copy(entries, name, lose_entry, lose, win.node, at, "changed", lose_side)

    def _copy(
        self,
        entries: dict[bytes, Entry],
        name: bytes,
        entry: Entry,
        made: Change,
        kept_by: str,
        at: tuple[str, ...],
        kind: str,
        side: str,
    ) -> None:
        copy = copy_name(name.decode("utf-8", "surrogateescape"), made.node, made.time)
        taken = {fold(n.decode("utf-8", "surrogateescape")) for n in entries}
        candidate, n = copy, 2
        while fold(candidate) in taken:
            candidate = f"{copy}-{n}"
            n += 1
        entries[candidate.encode("utf-8", "surrogateescape")] = entry
        self.conflicts.append(
            Conflict(
                "/".join((*at, name.decode("utf-8", "surrogateescape"))),
                "/".join((*at, candidate)),
                kept_by,
                made.node,
                kind,
                side,
            )
        )

    def _separate_cases(
        self, entries: dict[bytes, Entry], ours: Tree, theirs: Tree, at: tuple[str, ...]
    ) -> None:
        """Two names that fold alike, one from each side: the later (by the conflict order)
        moves to a copy, so the merged folder keeps the vault's name rule."""
        groups: dict[str, list[bytes]] = {}
        for name in entries:
            groups.setdefault(fold(name.decode("utf-8", "surrogateescape")), []).append(name)
        for names in groups.values():
            if len(names) < 2:
                continue
            ranked = []
            for name in names:
                side = "ours" if name in ours else "theirs"
                path = (*at, name.decode("utf-8", "surrogateescape"))
                key = self.sides[side].change(path, entries[name][1]).key()
                ranked.append((key, name, side))
            ranked.sort(reverse=True)
            winner_key = ranked[0][0]
            for key, name, side in ranked[1:]:
                entry = entries.pop(name)
                self._copy(entries, name, entry, Change(*key), winner_key[1], at, "case", side)


def _entry(side: tuple[int | None, bytes | None]) -> Entry | None:
    mode, sha = side
    if mode is None or sha is None:
        return None
    return (mode, bytes(sha))


def copy_name(name: str, node: str, when: int) -> str:
    """``NAME.conflict-<8 of NodeId>-<UTC time>``, the name cut so the result fits a path
    component (255 bytes)."""
    stamp = datetime.datetime.fromtimestamp(when, datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    suffix = f"{COPY_MARK}{node[1:9] if node.startswith('v') else node[:8]}-{stamp}"
    room = MAX_COMPONENT_BYTES - len(suffix.encode()) - 8  # and a "-N" to tell copies apart
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > room:
        name = raw[:room].decode("utf-8", "ignore")
    return name + suffix


def is_copy(name: str) -> bool:
    """Whether a secret's name is that of a conflict copy."""
    return parse_copy(name) is not None


def _merged_tags(
    objects: VaultObjects,
    base_tree: Tree | None,
    ours_tree: bytes,
    theirs_tree: bytes,
    merged_tree: bytes,
    conflicts: list[Conflict],
) -> dict[str, list[str]] | None:
    """The merged tags, path by path and tag by tag (None: keep the tag file as merged)."""
    base = try_read_tags(objects, base_tree.id) if base_tree is not None else {}
    ours = try_read_tags(objects, ours_tree)
    theirs = try_read_tags(objects, theirs_tree)
    if ours is None or theirs is None:  # a side's tag file is not valid: keep what dulwich kept
        return None
    base = base or {}
    out: dict[str, list[str]] = {}
    for path in set(base) | set(ours) | set(theirs):
        b, o, t = set(base.get(path, [])), set(ours.get(path, [])), set(theirs.get(path, []))
        tags = (b & o & t) | (o - b) | (t - b)
        if tags:
            out[path] = sorted(tags)
    for c in conflicts:  # a copy keeps the tags its value had on the side that made it
        side = ours if c.side == "ours" else theirs
        if side.get(c.path):
            out[c.copy] = sorted(side[c.path])
    present = set(_secret_paths(objects, merged_tree))
    out = {p: t for p, t in out.items() if p in present}
    current = try_read_tags(objects, merged_tree)
    return None if current == out else out


def _secret_paths(objects: VaultObjects, tree_id: bytes, at: str = "") -> Iterator[str]:
    for entry in objects.get_tree(tree_id).items():
        name = entry.path.decode("utf-8", "surrogateescape")
        if name.startswith(RESERVED_PREFIX):
            continue
        path = f"{at}/{name}" if at else name
        if stat.S_ISDIR(entry.mode):
            yield from _secret_paths(objects, entry.sha, path)
        else:
            yield path


def redundant(store: SealedObjectStore, merge: bytes, head: bytes) -> bool:
    """Whether the commit ``merge`` adds nothing to ``head``'s history: it is a merge, each of
    its parents is in that history, and so is a commit with the same parents and tree (a twin
    made by another node that merged the same pair). Such a head may give way to ``head``."""
    from dulwich.walk import Walker

    from polykey.vaults.graph import is_ancestor
    from polykey.vaults.store import TypedObjects

    objects = store.objects
    commit = objects.get_commit(merge)
    if len(commit.parents) < 2:
        return False
    if not all(is_ancestor(store, p, head) for p in commit.parents):
        return False
    twins = TypedObjects(objects, Commit.type_num)
    parents = set(commit.parents)
    walker = Walker(twins, [ObjectID(head)], exclude=list(parents))
    return any(
        e.commit.id != merge and set(e.commit.parents) == parents and e.commit.tree == commit.tree
        for e in walker
    )


def supersedes(store: SealedObjectStore, new: bytes, old: bytes) -> bool:
    """Whether a head may move from ``old`` to ``new`` without losing anything: ``new``
    descends from ``old``, or ``old`` is a merge that ``new``'s history already holds a twin
    of (when each is the other's twin, the smaller id stands, so every node picks the same)."""
    from polykey.vaults.graph import is_ancestor

    if is_ancestor(store, old, new):
        return True
    if not redundant(store, old, new):
        return False
    return new < old or not redundant(store, new, old)


# --- conflict copies, as the user sees and resolves them ---------------------------------------


@dataclass(frozen=True)
class CopyInfo:
    """A conflict copy in a vault: the path it belongs to, and who made its value, when."""

    path: str
    copy: str
    node: str  # the first 8 characters of the NodeId (after its 'v')
    time: str  # UTC, as in the name: 20261204T161500Z


def parse_copy(path: str) -> CopyInfo | None:
    """The conflict copy that ``path`` names, or None."""
    folder, _, name = path.rpartition("/")
    head, mark, rest = name.rpartition(COPY_MARK)
    if not head or not mark:
        return None
    node, _, stamp = rest.partition("-")
    stamp = stamp.split("-", 1)[0]
    if len(node) != 8 or len(stamp) != 16 or not stamp.endswith("Z"):
        return None
    return CopyInfo(f"{folder}/{head}" if folder else head, path, node, stamp)


def conflict_copies(vault: Vault) -> list[CopyInfo]:
    """Every conflict copy in the vault, by path."""
    found = (parse_copy(e.path) for e in vault.ls("", recursive=True) if e.kind == "secret")
    return sorted((c for c in found if c is not None), key=lambda c: (c.path, c.copy))


def resolve(vault: Vault, path: str, keep: str, me: str) -> dict[str, str]:
    """Settle the conflict at ``path``: ``keep`` is "mine" (the value this node made),
    "theirs" (the other node's), or the name of one of its copies; the chosen value ends at
    ``path`` and every copy of it goes, in one commit. ``me`` is this node's NodeId."""
    from polykey.vaults.errors import IsADirectory, SecretNotFound
    from polykey.vaults.paths import join, split_path
    from polykey.vaults.tree import Delete, Put

    parts = split_path(path)
    path = join(parts)
    copies = [c for c in conflict_copies(vault) if c.path == path]
    if not copies:
        raise SecretNotFound(
            f"{vault.name}:{path} has no conflict copies",
            hint=f"List them with `pk vaults conflicts {vault.name}`.",
        )
    if vault.kind(path) == "dir":
        raise IsADirectory(
            f"{vault.name}:{path} is a folder that met a secret",
            hint="Move the copy where you want it with `pk secrets mv`.",
        )
    mine_code = me[1:9]
    mine = [c for c in copies if c.node == mine_code]
    others = [c for c in copies if c.node != mine_code]
    names = ", ".join(c.copy for c in copies)
    chosen: CopyInfo | None
    if keep == "mine":
        if len(mine) > 1:
            raise _ambiguous(vault.name, path, names)
        chosen = mine[0] if mine else None
    elif keep == "theirs":
        if mine and not others:
            chosen = None  # this node's value went to the copy: the one at the path is theirs
        elif len(others) == 1 and not mine:
            chosen = others[0]
        else:
            raise _ambiguous(vault.name, path, names)
    else:
        wanted = keep if "/" in keep else (path.rpartition("/")[0] + "/" + keep).lstrip("/")
        match = [c for c in copies if c.copy == wanted]
        if not match:
            raise SecretNotFound(
                f"{vault.name}:{wanted} is not a conflict copy of {path}",
                hint=f"Its copies: {names}.",
            )
        chosen = match[0]
    value = vault.lookup(split_path(chosen.copy)) if chosen is not None else None

    def build(objects: VaultObjects, _: bytes) -> list[tuple[tuple[str, ...], Op]]:
        ops: list[tuple[tuple[str, ...], Op]] = []
        if value is not None:
            ops.append((parts, Put(value[1])))
        ops.extend((split_path(c.copy), Delete()) for c in copies)
        return ops

    kept = chosen.copy if chosen is not None else path
    vault.commit(build, f"Resolve the conflict at {path}: keep {kept}.")
    return {"path": path, "kept": kept, "removed": names}


def _ambiguous(vault: str, path: str, names: str) -> Exception:
    from polykey.errors import InvalidInput

    return InvalidInput(
        f"{vault}:{path} has copies from several nodes: {names}",
        hint=f"Name the one to keep: pk vaults resolve {vault}:{path} --keep COPY.",
    )
