"""A vault as dulwich sees it: an object store over the vault's sealed records.

``SealedObjectStore`` is a dulwich object store whose objects are the records of one vault
(vaults/objects.py): it reads through ``VaultObjects`` (its cache of parsed trees and commits,
blobs in parts, ObjectMissing for a missing record) and, bound to a write transaction, adds
objects in that transaction. Nothing lands in a pack or on disk: the store holds no packs and
takes none. Objects read are trusted as stored (the records are authenticated); `pk node check`
re-hashes them.

dulwich reads many objects at places of one type (a commit's parents, a folder) and skips or
asserts on anything else. Here such a read is ``BrokenHistory``: the parents dulwich's walks
follow come from ``parents_of`` (through ``get_commit_graph``), ``TypedObjects`` is the store
for dulwich code that reads only trees or only commits, and ``Places`` checks that every place
naming an object a walk sends says one type.
"""

from __future__ import annotations

import binascii
import contextlib
import itertools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from stat import S_ISDIR
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar, cast

from dulwich.object_store import GraphTraversalReachability, PackCapableObjectStore
from dulwich.objects import S_ISGITLINK, Blob, Commit, ObjectID, ShaFile, Tree

from polykey.store.nodefile import Transaction
from polykey.vaults.errors import BrokenHistory
from polykey.vaults.objects import TYPE_NAMES, VaultObjects

T = TypeVar("T")

if TYPE_CHECKING:
    from dulwich.commit_graph import CommitGraph
    from dulwich.object_store import ObjectReachabilityProvider
    from dulwich.pack import Pack, UnpackedObject

_HEX_ID = re.compile(rb"[0-9a-f]{40}")
BATCH = 256  # objects read in one snapshot of the node file: a few milliseconds
NO_PACKS = "a vault takes no packs: its objects are sealed records, each added on its own"


def hex_id(sha: bytes) -> bytes | None:
    """A 40-hex object id from a hex or raw 20-byte one; None for anything else."""
    if len(sha) == 20:
        return binascii.hexlify(sha)
    return sha if len(sha) == 40 and _HEX_ID.fullmatch(sha) else None


class SealedObjectStore(PackCapableObjectStore):
    """The git objects of one vault as a dulwich object store.

    Reads come from the vault's records; ``add_object``/``add_objects`` work when the store
    is bound to a write transaction (``VaultObjects`` over a ``Transaction``) and raise
    RuntimeError otherwise. ``shared``: hand out the cache's own parsed trees and commits, for
    dulwich code that only reads them (walks, diffs, the git server); by default every read
    is a copy the caller may change (dulwich's ``commit_tree_changes`` edits what it reads).
    """

    def __init__(self, objects: VaultObjects, *, shared: bool = False) -> None:
        super().__init__()
        self.objects = objects
        self.shared = shared

    def __repr__(self) -> str:
        return f"SealedObjectStore({self.objects.name!r})"

    def sharing(self) -> SealedObjectStore:
        """This store handing out shared objects (for code that never changes them)."""
        return self if self.shared else SealedObjectStore(self.objects, shared=True)

    # --- reading ------------------------------------------------------------------------------

    def contains_loose(self, sha: bytes) -> bool:
        hexsha = hex_id(sha)
        return hexsha is not None and self.objects.has(hexsha)

    def __contains__(self, sha: bytes) -> bool:
        return self.contains_loose(sha)

    @property
    def packs(self) -> list[Pack]:
        return []

    def _read(self, sha: bytes) -> ShaFile:
        hexsha = hex_id(sha)
        if hexsha is None:
            raise KeyError(sha)
        return self.objects.get(hexsha)

    def __getitem__(self, sha: bytes) -> ShaFile:
        obj = self._read(sha)
        if self.shared or isinstance(obj, Blob):  # blobs are never cached: this one is ours
            return obj
        return obj.copy()

    def get_raw(self, name: bytes) -> tuple[int, bytes]:
        obj = self._read(name)
        return obj.type_num, obj.as_raw_string()

    def iter_unpacked_subset(
        self,
        shas: Iterable[bytes],
        *,
        include_comp: bool = False,
        allow_missing: bool = False,
        convert_ofs_delta: bool = True,
    ) -> Iterator[UnpackedObject]:
        """Each object whole (a vault holds no deltas), read a batch at a time in one snapshot
        of the node file (dulwich's pack writer asks every object it sends, for deltas)."""
        from dulwich.pack import UnpackedObject

        for batch in batched(shas, BATCH):
            found: list[ShaFile] = []
            with reading(self.objects):
                for sha in batch:
                    try:
                        found.append(self._read(sha))
                    except KeyError:
                        if not allow_missing:
                            raise
            for obj in found:
                yield UnpackedObject(obj.type_num, sha=obj.id, decomp_chunks=obj.as_raw_chunks())

    def __iter__(self) -> Iterator[ObjectID]:
        """Every object id of the vault (this opens every record: write-once names are hidden),
        with those added in this store's transaction."""
        source: Any = self.objects.source
        node = source.node if isinstance(source, Transaction) else source
        keys: list[bytes] = node.keys(self.objects.ns)
        ids = {binascii.hexlify(k) for k in keys if len(k) == 20} | self.objects.added
        return iter(sorted(cast(set[ObjectID], ids)))

    def get_commit_graph(self) -> CommitGraph | None:
        """Not a commit-graph file: the hook through which dulwich's walks (ancestry, missing
        objects, depth) ask a commit's parents, checked here to be commits."""
        return cast("CommitGraph", _Parents(self.objects))

    def get_reachability_provider(self, prefer_bitmaps: bool = True) -> ObjectReachabilityProvider:
        return _Reachability(self.objects)

    # --- writing ------------------------------------------------------------------------------

    def add_object(self, obj: ShaFile) -> None:
        """Add one object in the store's write transaction (a large blob in parts)."""
        self.objects.add(obj, cache=False)  # the caller may change ``obj`` afterwards

    def add_objects(
        self,
        objects: Sequence[tuple[ShaFile, str | None]],
        progress: Callable[..., None] | None = None,
    ) -> None:
        for obj, _path in objects:
            self.add_object(obj)

    def add_pack(self) -> tuple[BinaryIO, Callable[[], None], Callable[[], None]]:
        raise NotImplementedError(NO_PACKS)

    def add_pack_data(
        self,
        count: int,
        unpacked_objects: Iterator[UnpackedObject],
        progress: Callable[..., None] | None = None,
    ) -> Pack | None:
        raise NotImplementedError(NO_PACKS)

    def add_thin_pack(self, *args: Any, **kwargs: Any) -> None:
        raise NotImplementedError(NO_PACKS)


class TypedObjects(SealedObjectStore):
    """The vault's objects where every object read is named as ``type_num`` (a folder: a tree;
    a parent: a commit): reading another type is BrokenHistory. Objects are shared."""

    def __init__(self, objects: VaultObjects, type_num: int) -> None:
        super().__init__(objects, shared=True)
        self.type_num = type_num
        self._get: Callable[[bytes], ShaFile] = (
            objects.get_tree if type_num == Tree.type_num else objects.get_commit
        )

    def _read(self, sha: bytes) -> ShaFile:
        hexsha = hex_id(sha)
        if hexsha is None:
            raise KeyError(sha)
        return self._get(hexsha)


def reading(objects: VaultObjects) -> contextlib.AbstractContextManager[None]:
    """Reads of ``objects`` as one snapshot of the node file (within a transaction: as is)."""
    snapshot = getattr(objects.source, "snapshot", None)
    return snapshot() if snapshot is not None else contextlib.nullcontext()


def batched(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while batch := list(itertools.islice(iterator, size)):
        yield batch


def parents_of(objects: VaultObjects, commit: Commit) -> list[ObjectID]:
    """A commit's parents, each checked to be a commit (BrokenHistory otherwise)."""
    for parent in commit.parents:
        objects.get_commit(parent)
    return list(commit.parents)


class _Parents:
    """Shaped like dulwich's CommitGraph, of which dulwich asks only ``get_parents``."""

    def __init__(self, objects: VaultObjects) -> None:
        self.objects = objects

    def get_parents(self, sha: ObjectID) -> list[ObjectID] | None:
        """The parents of the commit ``sha``; None when ``sha`` is not one (dulwich then reads
        it itself: a head its caller named may be a tag or anything else)."""
        hexsha = hex_id(sha)
        if hexsha is None or self.objects.kind(hexsha) != Commit.type_num:
            return None
        return parents_of(self.objects, self.objects.get_commit(hexsha))


class _Reachability(GraphTraversalReachability):
    """dulwich's reachability walks over typed reads: commits as commits, folders as trees."""

    def __init__(self, objects: VaultObjects) -> None:
        super().__init__(TypedObjects(objects, Commit.type_num))
        self._trees = GraphTraversalReachability(TypedObjects(objects, Tree.type_num))

    def get_tree_objects(self, tree_shas: Iterable[ObjectID]) -> set[ObjectID]:
        return self._trees.get_tree_objects(tree_shas)


def read_as(objects: VaultObjects, sha: bytes, type_num: int) -> None:
    """Check that ``sha`` is of the type its place says (BrokenHistory otherwise). Trees and
    commits come from the cache; a blob's record is read (a large blob's part list only)."""
    if type_num == Tree.type_num:
        objects.get_tree(sha)
    elif type_num == Commit.type_num:
        objects.get_commit(sha)
    else:
        found = objects.kind(sha)
        if found is None:
            objects.get(sha)  # ObjectMissing, naming it
        elif found != type_num:
            raise _wrong(objects, sha, found, type_num)


class Places:
    """Every place a walk through a history names an object at, checked to agree: dulwich
    sends an object once, at the first place it meets, so a second place naming it as another
    type (a file naming a folder) would go unseen. Trees and commits to be sent are read
    (cached) and checked; a blob is read only when two places disagree about it."""

    def __init__(self, objects: VaultObjects) -> None:
        self.objects = objects
        self.named: dict[bytes, int] = {}

    def see(self, sha: bytes, type_num: int) -> None:
        """``sha`` is to be sent as ``type_num``: check it and the places it names."""
        self._name(sha, type_num)
        if type_num == Tree.type_num:
            tree = self.objects.get_tree(sha)
            named = self.named
            for entry_name in tree:  # the tree's own order: iteritems() sorts on every call
                mode, entry = tree[entry_name]
                kind = Tree.type_num if S_ISDIR(mode) else Blob.type_num
                first = named.setdefault(entry, kind)
                if first != kind and not S_ISGITLINK(mode):
                    self._name(entry, kind)
        elif type_num == Commit.type_num:
            commit = self.objects.get_commit(sha)
            self._name(commit.tree, Tree.type_num)
            for parent in commit.parents:
                self._name(parent, Commit.type_num)

    def _name(self, sha: bytes, type_num: int) -> None:
        first = self.named.setdefault(sha, type_num)
        if first != type_num:  # one of two places is wrong: the object says which
            found = self.objects.kind(sha)
            if found is None:
                self.objects.get(sha)  # ObjectMissing, naming it
            raise _wrong(self.objects, sha, found, type_num if found == first else first)


def _wrong(objects: VaultObjects, sha: bytes, found: int | None, wanted: int) -> BrokenHistory:
    actual = TYPE_NAMES.get(found or 0, "object of an unknown type")
    named = TYPE_NAMES.get(wanted, "object of an unknown type")
    return BrokenHistory(f"{objects.name}: {sha.decode()} is a {actual}, not a {named}")
