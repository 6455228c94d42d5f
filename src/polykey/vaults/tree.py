"""Editing git trees: a batch of puts, deletes and mkdirs becomes new trees, checked as it goes.

Only two kinds of entry exist in a vault: secrets (mode 100644 blobs) and directories (trees).
An empty directory made with mkdir holds the reserved empty blob ``.polykey-dir``.

A changed directory is not rebuilt entry by entry. Its serialised entries (``mode name\\0id``,
in git's tree order) are kept in blocks of about 128, each a bytes object, with the order key of
each block's first entry; a change finds its block by binary search, takes only that block apart,
and joins the blocks again. So writing one secret into a folder of 10,000 or 100,000 costs a few
copies of contiguous memory, a copy of dulwich's map of the entries, and hashing, sealing and
storing the tree (which git's format makes whole), not a Python loop over every entry. The blocks
and a map of the folded names (for the collision rule) are kept per tree id for trees of 64
entries or more, in a bounded cache per node (by the node's object cache). They hold names and
ids, never secret contents, and they are a function of the tree's id, so they are right in any
vault and at any revision.
"""

from __future__ import annotations

import binascii
import stat
import threading
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol, Union, cast

from dulwich.objects import Blob, ObjectID, ShaFile, Tree

from polykey.vaults.errors import (
    IsADirectory,
    NameCollision,
    NotADirectory,
    SecretNotFound,
)
from polykey.vaults.objects import ObjectCache
from polykey.vaults.paths import fold, join

FILE_MODE = 0o100644
DIR_MODE = 0o040000
DIR_MARKER = b".polykey-dir"

INDEX_MIN_ENTRIES = 64
"""Trees with fewer entries are indexed afresh on each change (it costs microseconds)."""
INDEX_BUDGET = 1 << 18
"""Entries of all the indexes one node keeps (about 140 bytes each), least recently used out."""


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
Entries = dict[bytes, tuple[int, ObjectID]]


class TreeStore(Protocol):
    """What editing needs of a vault's objects (VaultObjects inside a write transaction)."""

    def get_tree(self, sha: bytes) -> Tree: ...

    def add(self, obj: ShaFile) -> bytes: ...


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


def apply(objects: TreeStore, tree_id: bytes | None, changes: Plan, prefix: str = "") -> bytes:
    """The id of the tree that results from applying ``changes`` (the root always exists)."""
    result = _apply(objects, tree_id, changes, prefix)
    if result is None:
        return objects.add(Tree())
    return result


def _apply(objects: TreeStore, tree_id: bytes | None, changes: Plan, prefix: str) -> bytes | None:
    """Apply one directory's changes (recursing into subdirectories as they come).

    The checks run in the order of ``changes`` and see what the original entry-by-entry build
    saw: a new name collides with a name the directory held, unless that name was removed by a
    change before the first new name, and with the new names before it."""
    base = objects.get_tree(tree_id) if tree_id is not None else None
    old: Entries = _entries_of(base) if base is not None else {}
    index: _Index | None = None
    changed: dict[bytes, tuple[int, ObjectID] | None] = {}
    new_folds: dict[str, bytes] = {}
    removed_early: set[bytes] = set()  # removed before the first new name was checked
    checked = False
    for name, op in changes.items():
        key = name.encode("utf-8")
        path = f"{prefix}{name}"
        existing = old.get(key)  # one change per name: earlier changes never touched it
        if existing is None and not isinstance(op, Delete):
            checked = True
            folded = fold(name)
            clash = new_folds.get(folded)
            if clash is None and base is not None and tree_id is not None:
                index = index or _index(objects, tree_id, base)
                clash = index.clash(folded, removed_early, base)
            if clash is not None:
                raise NameCollision(f"{path} (already: {prefix}{clash.decode(errors='replace')})")
            new_folds[folded] = key
        value = _change(objects, op, existing, path)
        if value is _UNCHANGED:
            continue
        if value is None and existing is not None and not checked:
            removed_early.add(key)
        changed[key] = value
    if base is not None and tree_id is not None:
        index = index or _index(objects, tree_id, base)
    return _splice(objects, tree_id, old, index, changed)


_UNCHANGED = (-1, cast(ObjectID, b""))


def _change(
    objects: TreeStore, op: Op | Plan, existing: tuple[int, ObjectID] | None, path: str
) -> tuple[int, ObjectID] | None:
    """The entry at ``path`` after ``op`` (None: no entry; _UNCHANGED: as it was)."""
    is_dir = existing is not None and stat.S_ISDIR(existing[0])
    if isinstance(op, dict):
        if existing is not None and not is_dir:
            raise NotADirectory(path)
        sub = _apply(objects, existing[1] if existing else None, op, path + "/")
        return None if sub is None else (DIR_MODE, cast(ObjectID, sub))
    if isinstance(op, Put):
        if is_dir:
            raise IsADirectory(path)
        return (FILE_MODE, cast(ObjectID, op.blob))
    if isinstance(op, Delete):
        if existing is None:
            raise SecretNotFound(path)
        if is_dir and not op.recursive:
            raise IsADirectory(path)
        return None
    if existing is not None:  # MkDir
        if not is_dir:
            raise NotADirectory(path)
        return _UNCHANGED
    marker = objects.add(Blob.from_string(b""))
    sub_tree = Tree()
    sub_tree.add(DIR_MARKER, FILE_MODE, cast(ObjectID, marker))
    return (DIR_MODE, cast(ObjectID, objects.add(sub_tree)))


# --- splicing ---------------------------------------------------------------------------------


def _encode(name: bytes, mode: int, sha: bytes) -> bytes:
    """One entry as git serialises it (as dulwich's serialize_tree does)."""
    return b"%04o %s\x00%s" % (mode, name, binascii.unhexlify(sha))


def _order(record: bytes) -> bytes:
    """The key of a serialised entry in git's tree order: its name, with '/' after a tree's."""
    space = record.index(b" ")
    name = record[space + 1 : -21]
    return name + b"/" if stat.S_ISDIR(int(record[:space], 8)) else name


def _key(name: bytes, entry: tuple[int, ObjectID]) -> bytes:
    return name + b"/" if stat.S_ISDIR(entry[0]) else name


def _records(block: bytes) -> list[bytes]:
    """The serialised entries of a block (a mode or name holds no NUL: the first one ends the
    name, and 20 bytes of id follow it)."""
    out = []
    at, end = 0, len(block)
    while at < end:
        stop = block.index(b"\x00", at) + 21
        out.append(block[at:stop])
        at = stop
    return out


def _chunk(records: list[bytes], fresh: bool = False) -> tuple[list[bytes], list[bytes]]:
    """``records`` in blocks of BLOCK entries (an edited block stays whole until it holds
    twice as many), and the order key of each block's first entry."""
    size = BLOCK if fresh or len(records) > 2 * BLOCK else max(len(records), 1)
    starts = range(0, len(records), size)
    return [b"".join(records[i : i + size]) for i in starts], [_order(records[i]) for i in starts]


_Edit = tuple[bytes, int, bytes | None]  # (order key, 1 if it replaces that entry, new record)


def _edit(records: list[bytes], edits: list[_Edit]) -> list[bytes]:
    placed = []
    for order, replaces, record in edits:
        at = bisect_left(records, order, key=_order)
        if replaces and (at >= len(records) or _order(records[at]) != order):
            raise AssertionError("a tree's index does not match the tree")
        placed.append((at, replaces, order, record))
    placed.sort()
    out: list[bytes] = []
    done = 0
    for at, replaces, _, record in placed:
        out += records[done:at]
        if record is not None:
            out.append(record)
        done = at + replaces
    out += records[done:]
    return out


def _splice(
    objects: TreeStore,
    base_id: bytes | None,
    old: Entries,
    index: _Index | None,
    changed: dict[bytes, tuple[int, ObjectID] | None],
) -> bytes | None:
    """Store the tree ``old`` becomes after ``changed``: only the blocks of the index that hold
    a changed name are taken apart and serialised again."""
    blocks, firsts = (index.blocks, index.firsts) if index is not None else ([], [])
    edits: dict[int, list[_Edit]] = {}  # by block
    entries = dict(old)
    for key, value in changed.items():
        before = old.get(key)
        moved = before is None or value is None or _is_dir(before) != _is_dir(value)
        if before is not None:
            order = _key(key, before)
            record = None if moved or value is None else _encode(key, *value)
            edits.setdefault(_block_of(firsts, order), []).append((order, 1, record))
        if value is None:
            entries.pop(key, None)
        else:
            entries[key] = value
            if moved:
                order = _key(key, value)
                edits.setdefault(_block_of(firsts, order), []).append(
                    (order, 0, _encode(key, *value))
                )
    if not entries:
        return None
    new_blocks: list[bytes] = []
    new_firsts: list[bytes] = []
    done = 0
    for at in sorted(edits):
        new_blocks += blocks[done:at]
        new_firsts += firsts[done:at]
        records = _edit(_records(blocks[at]) if at < len(blocks) else [], edits[at])
        if records:
            made, starts = _chunk(records)
            new_blocks += made
            new_firsts += starts
        done = at + 1
    new_blocks += blocks[done:]
    new_firsts += firsts[done:]
    sha = objects.add(_make_tree(entries, b"".join(new_blocks)))
    if len(entries) >= INDEX_MIN_ENTRIES and sha != base_id:
        indexes = _indexes(objects)
        if indexes is not None:
            folds = index.take_folds(changed, old) if index is not None else None
            indexes.put(sha, _Index(new_blocks, new_firsts, len(entries), folds))
    return sha


def _block_of(firsts: list[bytes], order: bytes) -> int:
    """The block that holds (or would hold) the entry of this order key."""
    return max(bisect_right(firsts, order) - 1, 0)


def _is_dir(entry: tuple[int, ObjectID]) -> bool:
    return stat.S_ISDIR(entry[0])


# --- the index of a tree ----------------------------------------------------------------------

BLOCK = 128
"""Entries per block of an index: a change serialises again the block it touches, no more."""
_FOLDS_LOCK = threading.Lock()


class _Index:
    """A tree's serialised entries in git order, in blocks, and a map of its folded names
    (built when first needed, and handed on to the index of the next tree)."""

    __slots__ = ("blocks", "firsts", "folds", "size", "unique")

    def __init__(
        self,
        blocks: list[bytes],
        firsts: list[bytes],
        size: int,
        folds: dict[str, bytes] | None = None,
    ) -> None:
        self.blocks = blocks  # never changed
        self.firsts = firsts  # the order key of each block's first entry; never changed
        self.size = size
        self.folds = folds  # fold(name) -> name, when no two names fold alike
        self.unique = True  # False: two names of this tree fold alike (it came from elsewhere)

    @classmethod
    def of(cls, tree: Tree) -> _Index:
        blocks, firsts = _chunk([_encode(e.path, e.mode, e.sha) for e in tree.iteritems()], True)
        return cls(blocks, firsts, len(tree))

    def clash(self, folded: str, removed: set[bytes], tree: Tree) -> bytes | None:
        """The name of this tree, not in ``removed``, that folds to ``folded`` (the last one in
        git order, as a map of every name would keep)."""
        if self.folds is None and self.unique:
            folds = {fold(n.decode("utf-8", "replace")): n for n in _entries_of(tree)}
            with _FOLDS_LOCK:
                if len(folds) != self.size:
                    self.unique = False
                elif self.folds is None:
                    self.folds = folds
        with _FOLDS_LOCK:
            if self.folds is not None:
                name = self.folds.get(folded)
                return None if name is None or name in removed else name
        found = None
        for item in tree.iteritems():
            if item.path not in removed and fold(item.path.decode("utf-8", "replace")) == folded:
                found = item.path
        return found

    def take_folds(
        self, changed: dict[bytes, tuple[int, ObjectID] | None], old: Entries
    ) -> dict[str, bytes] | None:
        """The map of folded names after ``changed`` (whose new names were checked not to
        collide), made from this index's own, which it gives up (the tree it indexes is
        usually no longer the head; if it is needed again, it is built again)."""
        with _FOLDS_LOCK:
            folds, self.folds = self.folds, None
        if folds is None:
            return None
        for key, value in changed.items():
            if (value is None) == (key in old):  # a name removed, or a name added
                folded = fold(key.decode("utf-8", "replace"))
                if value is not None:
                    folds[folded] = key
                elif folds.get(folded) == key:
                    del folds[folded]
        return folds


class _Indexes:
    """The indexes of one node's large trees, by tree id, least recently used out first."""

    def __init__(self) -> None:
        self.items: OrderedDict[bytes, _Index] = OrderedDict()
        self.size = 0
        self.lock = threading.Lock()

    def get(self, sha: bytes) -> _Index | None:
        with self.lock:
            found = self.items.get(sha)
            if found is not None:
                self.items.move_to_end(sha)
            return found

    def put(self, sha: bytes, index: _Index) -> None:
        with self.lock:
            known = self.items.pop(sha, None)  # the same tree: the newer index may hold more
            if known is not None:
                self.size -= known.size
            self.items[sha] = index
            self.size += index.size
            while self.size > INDEX_BUDGET and len(self.items) > 1:
                _, gone = self.items.popitem(last=False)
                self.size -= gone.size


def _indexes(objects: TreeStore) -> _Indexes | None:
    """One set of indexes per node, kept with the node's object cache (none without one)."""
    owner = getattr(objects, "cache", None)
    if not isinstance(owner, ObjectCache):
        return None
    return owner.memo("tree indexes", _Indexes)


def _index(objects: TreeStore, tree_id: bytes, tree: Tree) -> _Index:
    indexes = _indexes(objects) if len(tree) >= INDEX_MIN_ENTRIES else None
    found = indexes.get(tree_id) if indexes is not None else None
    if found is None:
        found = _Index.of(tree)
        if indexes is not None:
            indexes.put(tree_id, found)
    return found


# --- dulwich trees without re-parsing ---------------------------------------------------------


def _entries_of(tree: Tree) -> Entries:
    """A tree's entries by name (dulwich's own map, read only)."""
    if _FAST_TREES:
        return tree._entries
    return {e.path: (e.mode, e.sha) for e in tree.iteritems()}


def _make_tree(entries: Entries, raw: bytes) -> Tree:
    """The tree whose serialisation is ``raw`` and whose entries are ``entries``, without
    parsing ``raw`` again (dulwich would rebuild a map of every entry in Python)."""
    if not _FAST_TREES:
        return cast(Tree, Tree.from_raw_string(Tree.type_num, raw))
    tree = Tree()
    tree._entries = entries
    tree._chunked_text = [raw]
    tree._needs_serialization = False
    return tree


def _fast_trees_work() -> bool:
    """Whether this dulwich keeps a tree as the attributes `_make_tree` sets (else: parse)."""
    try:
        sample = Tree()
        sample.add(b"a", FILE_MODE, cast(ObjectID, b"1" * 40))
        sample.add(b"a.b", DIR_MODE, cast(ObjectID, b"2" * 40))
        raw = sample.as_raw_string()
        made = Tree()
        made._entries = dict(sample._entries)
        made._chunked_text = [raw]
        made._needs_serialization = False
        parsed = Tree.from_raw_string(Tree.type_num, raw)
        return (
            made.id == parsed.id == sample.id
            and made.items() == cast(Tree, parsed).items()
            and made.as_raw_string() == raw
            and made[b"a.b"] == (DIR_MODE, b"2" * 40)
        )
    except Exception:  # any change of dulwich's internals: take the safe path
        return False


_FAST_TREES = _fast_trees_work()
