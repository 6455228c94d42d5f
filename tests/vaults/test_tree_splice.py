"""vaults/tree.py splices changes into a directory's serialised entries instead of rebuilding it.

Every test here runs the same batches through `tree.apply` and through the straightforward build
it replaced (every entry into a fresh dulwich Tree, serialised by dulwich), and wants the same
trees byte for byte, the same ids, and the same errors with the same messages: git's tree order
(a file "a" sorts before "a-b", a folder "a" as "a/" after it), names that collide once folded,
files replaced by folders, deletes that empty folders, and the kept indexes across revisions,
vaults, evictions and nodes."""

from __future__ import annotations

import hashlib
import itertools
import stat
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import cast
from unittest import mock

import pytest
from dulwich.objects import Blob, ObjectID, ShaFile, Tree, parse_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from polykey.errors import PolykeyError
from polykey.vaults import tree as trees
from polykey.vaults.errors import (
    IsADirectory,
    NameCollision,
    NotADirectory,
    SecretNotFound,
)
from polykey.vaults.objects import ObjectCache
from polykey.vaults.paths import fold, join


class Node(ObjectCache):
    """Stands for one node's object cache, which the kept indexes hang on."""


class Store:
    """Objects in memory, as VaultObjects serves them: parsed trees, cached by id."""

    def __init__(self, cache: object | None = None) -> None:
        self.objects: dict[bytes, ShaFile] = {}
        self.cache = cache if cache is not None else Node()

    def get_tree(self, sha: bytes) -> Tree:
        obj = self.objects[sha]
        assert isinstance(obj, Tree)
        return obj

    def add(self, obj: ShaFile) -> bytes:
        raw = obj.as_raw_string()
        sha = obj.id
        assert sha == hashlib.sha1(obj.type_name + b" %d\x00" % len(raw) + raw).hexdigest().encode()
        if isinstance(obj, Tree):  # what a later read parses is what the tree says it holds
            parsed = Tree.from_raw_string(Tree.type_num, raw)
            assert cast(Tree, parsed).items() == obj.items()
            assert raw == b"".join(dulwich_serialised(obj))
        self.objects[sha] = obj
        return sha


def dulwich_serialised(tree: Tree) -> list[bytes]:
    fresh = Tree()
    for item in tree.iteritems():
        fresh.add(item.path, item.mode, item.sha)
    return fresh.as_raw_chunks()


def reference_apply(
    objects: Store, tree_id: bytes | None, changes: trees.Plan, prefix: str = ""
) -> bytes:
    """tree.apply as it was: every entry into a fresh dulwich Tree, every time."""
    result = _reference(objects, tree_id, changes, prefix)
    return result if result is not None else objects.add(Tree())


def _reference(
    objects: Store, tree_id: bytes | None, changes: trees.Plan, prefix: str
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
        if existing is None and not isinstance(op, trees.Delete):
            if folded is None:
                folded = {fold(k.decode("utf-8", "replace")): k for k in entries}
            clash = folded.get(fold(name))
            if clash is not None:
                raise NameCollision(f"{path} (already: {prefix}{clash.decode(errors='replace')})")
            folded[fold(name)] = key
        if isinstance(op, dict):
            if existing is not None and not is_dir:
                raise NotADirectory(path)
            sub = _reference(objects, existing[1] if existing else None, op, path + "/")
            if sub is None:
                entries.pop(key, None)
            else:
                entries[key] = (trees.DIR_MODE, sub)
        elif isinstance(op, trees.Put):
            if is_dir:
                raise IsADirectory(path)
            entries[key] = (trees.FILE_MODE, op.blob)
        elif isinstance(op, trees.Delete):
            if existing is None:
                raise SecretNotFound(path)
            if is_dir and not op.recursive:
                raise IsADirectory(path)
            del entries[key]
        else:
            if existing is not None and not is_dir:
                raise NotADirectory(path)
            if existing is None:
                marker = objects.add(Blob.from_string(b""))
                sub_tree = Tree()
                sub_tree.add(trees.DIR_MARKER, trees.FILE_MODE, cast(ObjectID, marker))
                entries[key] = (trees.DIR_MODE, objects.add(sub_tree))
    if not entries:
        return None
    tree = Tree()
    for key, (mode, sha) in entries.items():
        tree.add(key, mode, cast(ObjectID, sha))
    return objects.add(tree)


def blob(n: int) -> bytes:
    return hashlib.sha1(b"blob %d" % n).hexdigest().encode()


Change = tuple[tuple[str, ...], trees.Op]


def run(store: Store, root: bytes | None, changes: Sequence[Change]) -> bytes | PolykeyError:
    try:
        plan = trees.plan(list(changes))
    except PolykeyError as exc:
        return exc
    try:
        if isinstance(store, Reference):
            return reference_apply(store, root, plan)
        return trees.apply(store, root, plan)
    except PolykeyError as exc:
        return exc


class Reference(Store):
    pass


def same(mine: bytes | PolykeyError, theirs: bytes | PolykeyError) -> None:
    if isinstance(theirs, PolykeyError):
        assert isinstance(mine, PolykeyError), f"expected {theirs!r}, got a tree"
        assert (type(mine), str(mine)) == (type(theirs), str(theirs))
    else:
        assert not isinstance(mine, PolykeyError), f"expected a tree, got {mine!r}"
        assert mine == theirs


def walk(store: Store, tree_id: bytes, prefix: str = "") -> Iterator[tuple[str, int, bytes]]:
    for item in store.get_tree(tree_id).iteritems():
        path = prefix + item.path.decode()
        yield path, item.mode, item.sha
        if stat.S_ISDIR(item.mode):
            yield from walk(store, item.sha, path + "/")


class Pair:
    """The same history through tree.apply and through the reference, step by step."""

    def __init__(self, cache: object | None = None) -> None:
        self.mine, self.theirs = Store(cache), Reference()
        self.root: bytes | None = None
        self.roots: list[bytes] = []

    def step(self, changes: Sequence[Change], at: bytes | None = None) -> bytes | PolykeyError:
        base = self.root if at is None else at
        mine, theirs = run(self.mine, base, changes), run(self.theirs, base, changes)
        same(mine, theirs)
        if isinstance(mine, bytes):
            assert self.mine.objects[mine].as_raw_string() == (
                self.theirs.objects[mine].as_raw_string()
            )
            if at is None:
                self.root = mine
            self.roots.append(mine)
        return mine


# --- git order ----------------------------------------------------------------------------------


def stored_order(pair: Pair) -> list[bytes]:
    """The names of the root as its serialised bytes hold them."""
    raw = pair.mine.get_tree(cast(bytes, pair.root)).as_raw_string()
    return [name for name, _, _ in parse_tree(raw, sha_len=20)]


TRICKY = ["a", "a.b", "a-b", "a0", "a_", "ab", "a b", "b", "A", "\u00e9", "z", "~"]


def test_a_file_and_a_folder_named_alike_sort_as_git_sorts_them() -> None:
    pair = Pair()
    for name in ["a0", "a-b", "a.b", "ab"]:
        pair.step([((name,), trees.Put(blob(1)))])
    pair.step([(("a", "x"), trees.Put(blob(2)))])  # the folder "a" sorts as "a/": after "a.b"
    assert stored_order(pair) == [b"a-b", b"a.b", b"a", b"a0", b"ab"]
    pair.step([(("a",), trees.Delete(recursive=True))])
    pair.step([(("a",), trees.Put(blob(3)))])  # the file "a" sorts first
    assert stored_order(pair) == [b"a", b"a-b", b"a.b", b"a0", b"ab"]


def test_a_file_is_replaced_by_a_folder_and_back_in_later_commits() -> None:
    pair = Pair()
    pair.step([((n,), trees.Put(blob(i))) for i, n in enumerate(TRICKY) if n != "A"])
    for round_ in range(3):
        pair.step([(("a",), trees.Delete(recursive=True))])
        pair.step([(("a", "inner"), trees.Put(blob(round_)))])
        assert isinstance(pair.step([(("a",), trees.Put(blob(9)))]), IsADirectory)
        pair.step([(("a",), trees.Delete(recursive=True))])
        pair.step([(("a",), trees.Put(blob(round_)))])
        assert isinstance(pair.step([(("a", "inner"), trees.Put(blob(1)))]), NotADirectory)


def test_a_large_flat_folder_takes_every_kind_of_change() -> None:
    pair = Pair()
    names = [f"s{i:05d}" for i in range(3000)]
    pair.step([(("flat", n), trees.Put(blob(i))) for i, n in enumerate(names)])
    pair.step([(("flat", "s00100"), trees.Put(blob(-1)))])  # update
    pair.step([(("flat", "s00100x"), trees.Put(blob(-2)))])  # insert in the middle
    pair.step([(("flat", "0first"), trees.Put(blob(-3)))])  # before every entry
    pair.step([(("flat", "~last"), trees.Put(blob(-4)))])  # after every entry
    pair.step([(("flat", "s01000"), trees.Delete())])
    pair.step([(("flat", "s00000"), trees.Delete())])  # the first
    pair.step([(("flat", "~last"), trees.Delete())])  # the last
    pair.step([(("flat", "s00500"), trees.MkDir())])
    assert isinstance(pair.step([(("flat", "S00200"), trees.Put(blob(0)))]), NameCollision)
    assert isinstance(pair.step([(("flat", "s00300", "x"), trees.Put(blob(0)))]), NotADirectory)
    pair.step([(("flat", "s00200"), trees.Delete()), (("flat", "S00200"), trees.Put(blob(5)))])
    pair.step([(("flat", n), trees.Put(blob(i + 7))) for i, n in enumerate(names[1500:1900])])
    pair.step([(("flat", n), trees.Delete()) for n in names[2000:2999]])
    pair.step(
        [
            (("flat", n), trees.Delete(recursive=True))
            for n in names
            if n not in {"s00000", "s01000", "s00200", *names[2000:]}
        ]
        + [(("flat", "S00200"), trees.Delete())]
    )
    pair.step([(("flat", "s00100x"), trees.Delete()), (("flat", "0first"), trees.Delete())])
    assert [p for p, _, _ in walk(pair.mine, cast(bytes, pair.root))] == ["flat", "flat/s02999"]
    pair.step([(("flat", "s02999"), trees.Delete())])  # the folder empties: it goes
    assert pair.mine.get_tree(cast(bytes, pair.root)).items() == []


# --- name collisions ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second"),
    [("Key", "key"), ("caf\u00e9", "cafe\u0301"), ("stra\u00dfe", "STRASSE"), ("Key", "\u212aey")],
)
def test_names_that_fold_alike_collide_in_a_large_folder(first: str, second: str) -> None:
    pair = Pair()
    pair.step([((f"n{i:04d}",), trees.Put(blob(i))) for i in range(500)])
    pair.step([((first,), trees.Put(blob(1)))])
    assert isinstance(pair.step([((second,), trees.Put(blob(2)))]), NameCollision)
    assert isinstance(pair.step([((second, "x"), trees.Put(blob(2)))]), NameCollision)
    assert isinstance(pair.step([((second,), trees.MkDir())]), NameCollision)
    two_new = [((f"new-{first}",), trees.Put(blob(1))), ((f"new-{second}",), trees.Put(blob(2)))]
    assert isinstance(pair.step(two_new), NameCollision)
    # removed first, the old name no longer collides; removed after a new name, it still does
    pair.step([((first,), trees.Delete()), ((second,), trees.Put(blob(3)))])
    pair.step([((second,), trees.Delete()), ((first,), trees.Put(blob(4)))])
    assert isinstance(
        pair.step(
            [
                (("zz-new",), trees.Put(blob(5))),
                ((first,), trees.Delete()),
                ((second,), trees.Put(blob(6))),
            ]
        ),
        NameCollision,
    )
    assert isinstance(
        pair.step([((second,), trees.Put(blob(5))), ((first,), trees.Delete())]), NameCollision
    )


def test_a_name_removed_may_come_back_folded_otherwise_in_a_later_commit() -> None:
    """The kept map of folded names follows each commit: what was removed no longer collides,
    what was added does."""
    pair = Pair()
    pair.step([((f"n{i:04d}",), trees.Put(blob(i))) for i in range(500)])
    for i in range(3):
        pair.step([(("Key",), trees.Put(blob(i)))])
        assert isinstance(pair.step([(("KEY",), trees.Put(blob(i)))]), NameCollision)
        pair.step([(("Key",), trees.Delete()), ((f"other{i}",), trees.Put(blob(i)))])
        pair.step([(("kEy",), trees.Put(blob(i)))])
        assert isinstance(pair.step([(("Key",), trees.Put(blob(i)))]), NameCollision)
        pair.step([(("kEy",), trees.Delete())])
        renamed = pair.step([(("n0007",), trees.Delete()), (("N0007",), trees.Put(blob(i)))])
        assert isinstance(renamed, bytes)
        back = pair.step([(("N0007",), trees.Delete()), (("n0007",), trees.Put(blob(i)))])
        assert isinstance(back, bytes)
        assert isinstance(pair.step([(("N0007",), trees.Put(blob(i)))]), NameCollision)


@pytest.mark.parametrize("small", [False, True])
def test_a_tree_from_elsewhere_with_names_that_already_fold_alike(small: bool) -> None:
    """A peer's tree may hold "A" and "a" (and unsorted, and "040000" modes): the build
    reads it through dulwich, the same for both."""
    with indexing(small, 1 << 18):
        pair = Pair()
        entries = [(b"b", trees.FILE_MODE, blob(1)), (b"A", trees.FILE_MODE, blob(2))]
        entries += [(b"a", trees.FILE_MODE, blob(3)), (b"\xe2\x84\xaa", trees.FILE_MODE, blob(4))]
        entries += [(b"k", trees.FILE_MODE, blob(5))]
        entries += [(b"d%03d" % i, trees.FILE_MODE, blob(i)) for i in range(100)]
        raw = b"".join(b"%o %s\x00%s" % (m, n, bytes.fromhex(s.decode())) for n, m, s in entries)
        sub = Tree()
        sub.add(b"x", trees.FILE_MODE, cast(ObjectID, blob(7)))
        raw += b"040000 dir\x00" + bytes.fromhex(sub.id.decode())
        odd = cast(Tree, Tree.from_raw_string(Tree.type_num, raw))
        for store in (pair.mine, pair.theirs):
            store.objects[sub.id] = sub
            store.objects[odd.id] = odd
        batches: list[list[Change]] = [
            [(("a",), trees.Put(blob(9)))],  # an update: no check
            [(("new",), trees.Put(blob(9)))],
            [(("B",), trees.Put(blob(9)))],
            [(("K",), trees.Put(blob(9)))],
            [(("a",), trees.Delete()), (("zz",), trees.Put(blob(9)))],
            [(("a",), trees.Delete()), (("A",), trees.Delete()), (("nothere",), trees.Delete())],
            [
                (("a",), trees.Delete()),
                (("A",), trees.Delete()),
                (("\u212a",), trees.Delete()),
                (("K",), trees.Put(blob(9))),
            ],
            [(("a",), trees.Delete()), (("A",), trees.Delete()), (("\u00c4",), trees.Put(blob(1)))],
            [(("a",), trees.Delete()), (("\u00e4",), trees.Put(blob(9)))],
            [(("dir", "y"), trees.Put(blob(9)))],
            [(("dir", "x"), trees.Delete())],
        ]
        for changes in batches:
            pair.step(changes, at=odd.id)


# --- the same results for any history -----------------------------------------------------------

NAMES = st.sampled_from(
    [
        "a",
        "A",
        "a.b",
        "a-b",
        "a0",
        "a_",
        "ab",
        "b",
        "B",
        "k",
        "\u212a",
        "ss",
        "\u00df",
        "SS",
        "caf\u00e9",
        "cafe\u0301",
        "z",
    ]
)
OPS = st.one_of(
    st.builds(trees.Put, st.integers(0, 5).map(blob)),
    st.builds(trees.Delete, st.booleans()),
    st.builds(trees.MkDir),
)
CHANGES = st.lists(st.tuples(st.lists(NAMES, min_size=1, max_size=3).map(tuple), OPS), max_size=8)


@contextmanager
def indexing(small: bool, budget: int) -> Iterator[None]:
    """Keep indexes of small trees too (so they are reused and derived), in a small budget
    (so they are evicted)."""
    with (
        mock.patch.object(trees, "INDEX_MIN_ENTRIES", 1 if small else trees.INDEX_MIN_ENTRIES),
        mock.patch.object(trees, "INDEX_BUDGET", budget),
    ):
        yield


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    history=st.lists(CHANGES, min_size=1, max_size=12),
    back=st.lists(st.integers(0, 20), max_size=4),
    small=st.booleans(),
    budget=st.sampled_from([1, 8, 1 << 18]),
    filler=st.integers(0, 80),
)
def test_any_history_gives_the_trees_of_the_straightforward_build(
    history: list[list[Change]], back: list[int], small: bool, budget: int, filler: int
) -> None:
    with indexing(small, budget):
        pair = Pair()
        if filler:  # large enough for the kept indexes
            pair.step([((f"f{i:03d}",), trees.Put(blob(i))) for i in range(filler)])
            pair.step([(("d", f"f{i:03d}"), trees.Put(blob(i))) for i in range(filler)])
        for changes in history:
            pair.step(changes)
        for n in back:  # older revisions again, after the kept indexes moved on
            if pair.roots:
                pair.step(history[n % len(history)], at=pair.roots[n % len(pair.roots)])


@settings(max_examples=60, deadline=None)
@given(history=st.lists(CHANGES, min_size=1, max_size=8), small=st.booleans())
def test_two_vaults_of_one_node_share_indexes_correctly(
    history: list[list[Change]], small: bool
) -> None:
    """Indexes are per node and by tree id: two vaults editing the same trees agree."""
    cache = Node()
    with indexing(small, 1 << 18):
        one, two = Pair(cache), Pair(cache)
        for changes in history:
            one.step(changes)
            two.step(changes)
            two.step([(("other",), trees.Put(blob(len(changes))))])
        assert one.mine.cache is two.mine.cache


def test_without_the_fast_tree_construction_the_trees_are_the_same() -> None:
    with mock.patch.object(trees, "_FAST_TREES", False):
        pair = Pair()
        pair.step([((f"s{i:04d}",), trees.Put(blob(i))) for i in range(200)])
        pair.step([(("s0100",), trees.Put(blob(-1))), (("new",), trees.Put(blob(1)))])
        pair.step([(("s0005",), trees.Delete()), (("dir", "x"), trees.Put(blob(2)))])
        assert isinstance(pair.step([(("S0006",), trees.Put(blob(2)))]), NameCollision)


def test_the_fast_tree_construction_works_with_this_dulwich() -> None:
    assert trees._fast_trees_work()
    assert trees._FAST_TREES


def test_indexes_are_bounded_and_per_node() -> None:
    with indexing(small=True, budget=300):
        pair = Pair()
        pair.step([((f"s{i:04d}",), trees.Put(blob(i))) for i in range(100)])
        for i in range(20):
            pair.step([((f"n{i}",), trees.Put(blob(i)))])
        indexes = trees._indexes(pair.mine)
        assert indexes is not None
        assert indexes.size <= 300
        assert indexes.size == sum(x.size for x in indexes.items.values())
        assert trees._indexes(Store()) is not indexes


def test_plan_nesting_and_its_errors_are_unchanged() -> None:
    assert trees.plan([(("a", "b"), trees.Put(blob(1))), (("a", "c"), trees.Delete())]) == {
        "a": {"b": trees.Put(blob(1)), "c": trees.Delete()}
    }
    with pytest.raises(NotADirectory):
        trees.plan([(("a",), trees.Put(blob(1))), (("a", "b"), trees.Put(blob(1)))])
    with pytest.raises(IsADirectory):
        trees.plan([(("a", "b"), trees.Put(blob(1))), (("a",), trees.Put(blob(1)))])


def test_every_small_batch_over_tricky_names_matches() -> None:
    """Exhaustively: two changes over the tricky names, on a folder holding some of them."""
    base = [(n,) for n in ["a", "a.b", "a0", "B"]]
    ops: list[trees.Op] = [trees.Put(blob(1)), trees.Delete(), trees.Delete(True), trees.MkDir()]
    pair = Pair()
    start = pair.step([(p, trees.Put(blob(0))) for p in base] + [(("a-b", "x"), trees.MkDir())])
    assert isinstance(start, bytes)
    names = ["a", "A", "a-b", "a.b", "a0", "b", "B", "ab"]
    for (n1, op1), (n2, op2) in itertools.product(itertools.product(names, ops), repeat=2):
        pair.step([((n1,), op1), ((n2,), op2)], at=start)
    assert join(("a", "b")) == "a/b"
