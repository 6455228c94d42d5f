"""A vault's history through dulwich: commits newest first, ancestry, and what a peer lacks.

Each function reads objects as the type their place says (BrokenHistory otherwise): a commit's
parents are commits, its tree a tree, a folder a tree. ``missing_objects`` plans what a peer
holding ``haves`` lacks; each object then travels as its sealed record holds it, ``u8 type ‖
raw git object`` (1 commit, 2 tree, 3 blob), read by ``VaultObjects.wire`` (``missing_records``
does both).
"""

from __future__ import annotations

import binascii
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING

from dulwich.objects import Blob, Commit, ObjectID, Tree

from polykey.store.records import Namespace
from polykey.vaults.objects import ObjectCache, VaultObjects
from polykey.vaults.repo import VaultRepo
from polykey.vaults.store import Places, SealedObjectStore, TypedObjects, parents_of

if TYPE_CHECKING:
    from polykey.vaults.objects import RecordSource

_RANK = {Commit.type_num: 1, Tree.type_num: 2, Blob.type_num: 3}


def walk(store: SealedObjectStore, head: bytes) -> Iterator[Commit]:
    """The commits reachable from ``head``, newest first: dulwich's Walker, by commit time and,
    between commits of one second, by id. Every commit it reads is named as one (the head, a
    parent): it reads them as commits (BrokenHistory otherwise)."""
    from dulwich.walk import Walker

    commits = TypedObjects(store.objects, Commit.type_num)
    store.objects.get_commit(head)  # before the walk starts
    for entry in Walker(commits, [ObjectID(head)]):
        yield entry.commit


def is_ancestor(store: SealedObjectStore | VaultRepo, old: bytes, new: bytes) -> bool:
    """Whether the commit ``old`` is ``new`` or one of its ancestors.

    By dulwich's merge base (``old`` is the one lowest common ancestor), which follows every
    parent; not ``can_fast_forward``, which skips commits older than ``old`` and so misses an
    ancestor behind a commit made on a slow clock."""
    from dulwich.graph import find_merge_base

    repo = store if isinstance(store, VaultRepo) else VaultRepo(store.objects, shared=True)
    repo.objects.get_commit(old)
    repo.objects.get_commit(new)
    return find_merge_base(repo, [ObjectID(old), ObjectID(new)]) == [old]


def missing_objects(
    store: SealedObjectStore, head: bytes, haves: Iterable[bytes]
) -> Iterator[tuple[bytes, int]]:
    """(id, type number its place says) of every object reachable from ``head`` that a holder
    of the commits ``haves`` lacks, by dulwich's MissingObjectFinder: the head first, then
    commits, trees and blobs, each by id (a fixed order, so a paged fetch can resume).
    Commits and trees are read and checked, and every place an object is named at must say
    one type; blobs are not read here (``VaultObjects.wire`` reads one as a blob or fails).
    Haves the vault does not hold as commits are ignored."""
    from dulwich.object_store import MissingObjectFinder

    objects = store.objects
    objects.get_commit(head)
    held = [ObjectID(h) for h in set(haves) if _is_commit(objects, h)]
    finder = MissingObjectFinder(
        store.sharing(),
        haves=held,
        wants=[ObjectID(head)],
        get_parents=lambda c: parents_of(objects, c),
    )
    places = Places(objects)
    plan: list[tuple[bytes, int]] = []
    for sha, hint in finder:
        type_num = hint[0] if hint is not None and hint[0] is not None else Commit.type_num
        places.see(sha, type_num)
        plan.append((sha, type_num))
    plan.sort(key=lambda item: (item[0] != head, _RANK.get(item[1], 4), item[0]))
    return iter(plan)


PLANS = 8  # plans kept for the pages that follow (and the next clone of a head)
PLAN_ENTRIES = 250_000  # objects in all the plans kept (about 35 MB at most)
Plan = list[tuple[bytes, int]]


def planned(store: SealedObjectStore, head: bytes, haves: Iterable[bytes]) -> Plan:
    """``missing_objects`` as a list, kept per (vault, head, haves) in the node's object cache
    for the pages of a fetch that follow and the next clone of the same head, whether over
    the peer protocol or stock git (objects never change, so a plan never goes stale)."""
    objects = store.objects
    plans = objects.cache.memo("fetch plans", _Plans)
    key = (objects.vault_id, head, frozenset(haves))
    found = plans.get(key)
    if found is None:
        found = list(missing_objects(store, head, key[2]))
        plans.put(key, found)
    return found


class _Plans:
    """The last few plans of one node, least recently used out first, at most PLAN_ENTRIES
    objects in all (a larger plan is not kept)."""

    def __init__(self) -> None:
        self._items: OrderedDict[tuple[str, bytes, frozenset[bytes]], Plan] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bytes, frozenset[bytes]]) -> Plan | None:
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
            return found

    def put(self, key: tuple[str, bytes, frozenset[bytes]], plan: Plan) -> None:
        if len(plan) > PLAN_ENTRIES:
            return
        with self._lock:
            self._items[key] = plan
            while len(self._items) > PLANS or sum(map(len, self._items.values())) > PLAN_ENTRIES:
                self._items.popitem(last=False)


def missing_records(
    store: SealedObjectStore, head: bytes, haves: Iterable[bytes]
) -> Iterator[bytes]:
    """The objects of ``missing_objects`` as they travel (``u8 type ‖ raw``), read one by one."""
    for sha, type_num in missing_objects(store, head, haves):
        yield store.objects.wire(sha, type_num)


def with_received(store: SealedObjectStore, received: Mapping[bytes, bytes]) -> SealedObjectStore:
    """The vault's objects and, over them, objects received from a peer that have not landed
    (hex id → ``u8 type ‖ raw``, checked: sync/checks.py ``validate``), for asking ancestry
    before landing them. Read-only, with a cache of its own: nothing refused stays cached."""
    objects = store.objects
    source = _Received(objects.source, objects.ns, received)
    return SealedObjectStore(
        VaultObjects(source, objects.vault_id, ObjectCache(1024), objects.name), shared=True
    )


class _Received:
    """A record source answering a vault's object records from ``received`` first."""

    def __init__(self, source: RecordSource, ns: Namespace, received: Mapping[bytes, bytes]):
        self.source = source
        self.ns = ns
        self.received = received

    def get(self, ns: Namespace, key: bytes) -> bytes | None:
        if ns == self.ns:
            raw = self.received.get(binascii.hexlify(key))
            if raw is not None:
                return raw
        return self.source.get(ns, key)


def _is_commit(objects: VaultObjects, sha: bytes) -> bool:
    try:
        return objects.kind(sha) == Commit.type_num
    except (ValueError, binascii.Error):  # not a hex id
        return False
