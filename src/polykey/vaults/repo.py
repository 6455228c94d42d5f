"""A vault as a dulwich repository: its sealed object store and its one branch.

A vault has one ref, ``refs/heads/main``, kept in the record namespace ``vault/<id>/refs``;
``HEAD`` is always ``ref: refs/heads/main`` and is not stored. Refs move only inside a write
transaction (the refs container bound to a ``Transaction``), where the objects they name land
too. The repository has no files, config or index: it is what dulwich's walks, merge-base and
git server need, with every commit's parents checked to be commits.
"""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, BinaryIO, cast

from dulwich.object_store import MissingObjectFinder
from dulwich.objects import ZERO_SHA, ObjectID, valid_hexsha
from dulwich.refs import SYMREF, Ref, RefsContainer
from dulwich.repo import BaseRepo

from polykey.store.nodefile import Transaction
from polykey.vaults.objects import RecordSource, VaultObjects, refs_ns
from polykey.vaults.store import BATCH, Places, SealedObjectStore, reading

if TYPE_CHECKING:
    from dulwich.config import ConfigFile, StackedConfig
    from dulwich.object_store import GraphWalker
    from dulwich.pack import PackHint

HEAD = Ref(b"HEAD")
BRANCH = Ref(b"refs/heads/main")


class VaultRefs(RefsContainer):
    """The refs of one vault: ``refs/heads/main`` and, when ``symbolic_head``, HEAD naming it.

    Changing a ref needs the container bound to a write transaction (RuntimeError otherwise);
    any ref but the branch (and HEAD, which follows it) is refused, and the branch is never
    deleted (a vault is removed whole, `pk vaults remove`)."""

    def __init__(self, source: RecordSource, vault_id: str, *, symbolic_head: bool = True) -> None:
        super().__init__()
        self.source = source
        self.ns = refs_ns(vault_id)
        self.symbolic_head = symbolic_head

    def allkeys(self) -> set[Ref]:
        keys = {HEAD} if self.symbolic_head else set()
        if self.source.get(self.ns, BRANCH):
            keys.add(BRANCH)
        return keys

    def read_loose_ref(self, name: Ref) -> bytes | None:
        if name == HEAD and self.symbolic_head:
            return SYMREF + BRANCH
        if name == BRANCH:
            return self.source.get(self.ns, BRANCH) or None
        return None

    def get_packed_refs(self) -> dict[Ref, ObjectID]:
        return {}

    def _branch(self, name: Ref) -> Ref:
        if name == BRANCH or (name == HEAD and self.symbolic_head):
            return BRANCH
        raise ValueError(f"a vault has one ref, {BRANCH.decode()}, not {name[:80]!r}")

    def _tx(self) -> Transaction:
        if not isinstance(self.source, Transaction):
            raise RuntimeError("a vault's ref moves inside a write transaction")
        return self.source

    def set_symbolic_ref(self, name: Ref, other: Ref, *args: Any, **kwargs: Any) -> None:
        if name != HEAD or other != BRANCH:
            raise ValueError(f"a vault's HEAD is always ref: {BRANCH.decode()}")

    def set_if_equals(
        self,
        name: Ref,
        old_ref: bytes | None,
        new_ref: bytes,
        committer: bytes | None = None,
        timestamp: int | None = None,
        timezone: int | None = None,
        message: bytes | None = None,
    ) -> bool:
        """Move the branch to ``new_ref`` if it is at ``old_ref`` (None: wherever it is;
        40 zeros: only if it does not exist yet)."""
        ref = self._branch(name)
        if not valid_hexsha(new_ref) or new_ref == ZERO_SHA:
            raise ValueError("a vault's branch names a commit by its 40-hex id")
        tx = self._tx()
        if old_ref is not None and (tx.get(self.ns, ref) or ZERO_SHA) != old_ref:
            return False
        tx.put(self.ns, ref, new_ref)
        return True

    def add_if_new(
        self,
        name: Ref,
        ref: bytes,
        committer: bytes | None = None,
        timestamp: int | None = None,
        timezone: int | None = None,
        message: bytes | None = None,
    ) -> bool:
        return self.set_if_equals(name, ZERO_SHA, ref)

    def remove_if_equals(self, name: Ref, old_ref: bytes | None, *args: Any, **kw: Any) -> bool:
        raise ValueError("a vault's branch is never deleted; remove the vault instead")


class VaultRepo(BaseRepo):
    """One vault as a dulwich repository (read-only unless ``objects`` is over a write
    transaction). ``shared``: see SealedObjectStore (the git server and merge bases share)."""

    object_store: SealedObjectStore

    def __init__(
        self, objects: VaultObjects, *, symbolic_head: bool = True, shared: bool = False
    ) -> None:
        store = SealedObjectStore(objects, shared=shared)
        super().__init__(
            store, VaultRefs(objects.source, objects.vault_id, symbolic_head=symbolic_head)
        )
        self.objects = objects

    def __repr__(self) -> str:
        return f"VaultRepo({self.objects.name!r})"

    def get_named_file(self, path: str, basedir: str | None = None) -> BinaryIO | None:
        return None  # a vault has no files: no shallow list, grafts, description

    def _put_named_file(self, path: str, contents: bytes) -> None:
        raise NotImplementedError("a vault has no files")

    def _del_named_file(self, path: str) -> None:
        raise NotImplementedError("a vault has no files")

    def get_config(self) -> ConfigFile:
        from dulwich.config import ConfigFile

        return ConfigFile()

    def get_config_stack(self) -> StackedConfig:
        """The vault's (empty) config alone: never the serving user's ~/.gitconfig."""
        from dulwich.config import StackedConfig

        return StackedConfig([self.get_config()])

    def get_description(self) -> bytes | None:
        return None

    def find_missing_objects(
        self,
        determine_wants: Callable[[Mapping[Ref, ObjectID], int | None], list[ObjectID]],
        graph_walker: GraphWalker,
        progress: Callable[[bytes], None] | None,
        *,
        get_tagged: Callable[[], dict[ObjectID, ObjectID]] | None = None,
        depth: int | None = None,
    ) -> MissingObjectFinder | None:
        """dulwich's, with every object it names read as the type its place says. A clone
        (one head wanted, nothing held by the asker, no depth) takes the node's kept plan of
        that head (vaults/graph.py ``planned``), made once for every clone of it."""
        wanted: list[ObjectID] = []

        def wants(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
            wanted.extend(determine_wants(refs, depth))
            return wanted

        finder = super().find_missing_objects(
            wants, graph_walker, progress, get_tagged=get_tagged, depth=depth
        )
        if finder is None:
            return None
        shallow = getattr(graph_walker, "shallow", None) or getattr(graph_walker, "unshallow", None)
        heads = set(wanted)  # git asks once per ref naming it
        if len(heads) == 1 and not finder.remote_has and not shallow and depth is None:
            from polykey.vaults.graph import planned  # graph.py imports this module

            plan = planned(self.object_store, heads.pop(), ())
            return cast(MissingObjectFinder, _Planned(plan))
        return _Checked(finder, self.objects)


class _Planned:
    """A plan already made, as a MissingObjectFinder hands it out: (id, (type, no path))."""

    def __init__(self, plan: list[tuple[bytes, int]]) -> None:
        self._items = iter(plan)
        self._len = len(plan)

    def __len__(self) -> int:
        return self._len

    def __iter__(self) -> Iterator[tuple[ObjectID, PackHint | None]]:
        return self

    def __next__(self) -> tuple[ObjectID, PackHint | None]:
        sha, type_num = next(self._items)
        return ObjectID(sha), (type_num, None)


class _Checked(MissingObjectFinder):
    """A MissingObjectFinder already made, each object it yields checked to be of the type
    every place naming it says (``Places``): a folder a tree, a commit's tree a tree."""

    def __init__(self, finder: MissingObjectFinder, objects: VaultObjects) -> None:
        # not dulwich's __init__: the walk it does has been done, by ``finder``
        self._finder = finder
        self._objects = objects
        self._places = Places(objects)
        self._ready: deque[tuple[ObjectID, PackHint | None]] = deque()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._finder, name)

    def __next__(self) -> tuple[ObjectID, PackHint | None]:
        if not self._ready:
            with reading(self._objects):  # a batch of the walk's reads in one snapshot
                for sha, hint in itertools.islice(self._finder, BATCH):
                    if hint is not None and hint[0] is not None:
                        self._places.see(sha, hint[0])
                    self._ready.append((sha, hint))
        if not self._ready:
            raise StopIteration
        return self._ready.popleft()

    def __iter__(self) -> Iterator[tuple[ObjectID, PackHint | None]]:
        return self
