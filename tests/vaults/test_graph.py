"""A vault's history through dulwich: newest-first walks, ancestry, what a peer lacks, merges
with explicit parents; and a history whose objects are of the wrong type, read clearly."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

import pytest
from dulwich.graph import can_fast_forward
from dulwich.objects import Blob, Commit, ObjectID, Tree

from polykey.errors import NodeDamaged
from polykey.node import Node
from polykey.store.nodefile import Transaction
from polykey.vaults.errors import BrokenHistory
from polykey.vaults.graph import (
    is_ancestor,
    missing_objects,
    missing_records,
    walk,
    with_received,
)
from polykey.vaults.objects import VaultObjects, object_id
from polykey.vaults.tree import Put
from polykey.vaults.vault import BRANCH, Vault
from tests.conftest import NodeFixture
from tests.vaults.test_check import PLANTS, Planter, _missing_parent, _plant, _signed

# --- helpers ------------------------------------------------------------------------------------


@pytest.fixture
def vault(fresh_node: NodeFixture) -> Vault:
    v = fresh_node.node.vaults.create("work")
    v.write("db/password", b"hunter2")
    v.write("api", b"token")
    return v


def _commit(objects: VaultObjects, tree: bytes, parents: list[bytes], when: int) -> bytes:
    """An unsigned commit at a chosen time (walks and ancestry do not read signatures)."""
    c = Commit()
    c.tree, c.parents = ObjectID(tree), [ObjectID(p) for p in parents]
    c.author = c.committer = b"t <t>"
    c.author_time = c.commit_time = when
    c.author_timezone = c.commit_timezone = 0
    c.message = b"Made at a chosen time.\n"
    return objects.add(c)


def _heap_walk(objects: VaultObjects, head: bytes) -> Iterator[bytes]:
    """The walk the vault had before dulwich's: a heap by commit time, ties by id."""
    seen, queue = {head}, [(-objects.get_commit(head).commit_time, head)]
    while queue:
        _, sha = heapq.heappop(queue)
        yield sha
        for parent in objects.get_commit(sha).parents:
            if parent not in seen:
                seen.add(parent)
                heapq.heappush(queue, (-objects.get_commit(parent).commit_time, parent))


def _diamond(vault: Vault, tx: Transaction, skew: bool = False) -> dict[str, bytes]:
    """root ← left, right ← merge, with left and right made in the same second; ``skew``: the
    root's clock ran ahead of everyone else's."""
    objects = vault.objects(tx)
    tree = objects.add(Tree())
    base = 1_700_000_000
    root = _commit(objects, tree, [], base + (1000 if skew else 0))
    left = _commit(objects, tree, [root], base + 10)
    right = _commit(objects, objects.add(_one_file(objects)), [root], base + 10)
    merge = _commit(objects, tree, [left, right], base + 20)
    return {"root": root, "left": left, "right": right, "merge": merge}


def _one_file(objects: VaultObjects) -> Tree:
    tree = Tree()
    tree.add(b"f", 0o100644, ObjectID(objects.add_blob(b"x")))
    return tree


# --- walking ------------------------------------------------------------------------------------


def test_the_walk_is_newest_first_with_ties_by_id_as_before(vault: Vault) -> None:
    with vault.store.write() as tx:
        ids = _diamond(vault, tx)
    store = vault.object_store()
    walked = [c.id for c in walk(store, ids["merge"])]
    assert walked == list(_heap_walk(vault.objects(), ids["merge"]))
    assert walked[0] == ids["merge"] and walked[-1] == ids["root"]
    assert walked[1:3] == sorted([ids["left"], ids["right"]])


def test_log_and_resolve_follow_a_merge(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    with vault.store.write() as tx:
        side = vault._new_commit(vault.objects(tx).get_commit(head).tree, [head], "Side.")
        vault.objects(tx).add(side)
    merged = vault.commit(lambda *_: [], "Merge side.", parents=[head, side.id])
    log = vault.log()
    assert [c.id for c in log[:1]] == [merged.decode()]
    assert log[0].parents == (head.decode(), side.id.decode())
    assert {c.id for c in log} >= {head.decode(), side.id.decode()}
    assert vault.resolve(side.id[:10].decode()) == side.id
    assert vault.resolve("HEAD~1") == head  # ~ follows the first parent


# --- explicit parents ---------------------------------------------------------------------------


def test_a_merge_commit_has_two_parents_and_changes_the_first_ones_tree(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    with vault.store.write() as tx:
        objects = vault.objects(tx)
        other = objects.add(vault._new_commit(objects.add(_one_file(objects)), [head], "Other."))
    merged = vault.commit(
        lambda objects, _: [(("f",), _put(objects, b"x"))], "Merge.", parents=[head, other]
    )
    commit = vault.objects().get_commit(merged)
    assert commit.parents == [head, other] and vault.head() == merged
    assert vault.read("api") == b"token" and vault.read("f") == b"x"
    assert commit.gpgsig is not None


def _put(objects: VaultObjects, data: bytes) -> Put:
    return Put(objects.add_blob(data))


def test_without_parents_a_commit_builds_on_the_head_read_in_its_transaction(
    vault: Vault,
) -> None:
    before = vault.head()
    with vault.store.write() as tx:
        made = vault.commit(lambda *_: [], "Nothing.", tx=tx)
        assert vault.objects(tx).get_commit(made).parents == [before]
        again = vault.commit(lambda *_: [], "Nothing again.", tx=tx)
        assert vault.objects(tx).get_commit(again).parents == [made]
    assert vault.head() == again


def test_parents_that_leave_the_head_behind_or_repeat_are_refused(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    older = vault.resolve("HEAD~1")
    for parents in ([older], [], [head, head]):
        with pytest.raises(ValueError, match="include the vault's head"):
            vault.commit(lambda *_: [], "Bad.", parents=parents)
    assert vault.head() == head


def test_a_parent_that_is_not_a_commit_is_broken_history(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    tree = vault.objects().get_commit(head).tree
    with pytest.raises(BrokenHistory, match="is a tree, not a commit"):
        vault.commit(lambda *_: [], "Bad.", parents=[head, tree])
    assert vault.head() == head


# --- ancestry -----------------------------------------------------------------------------------


def test_ancestry_follows_every_parent(vault: Vault) -> None:
    with vault.store.write() as tx:
        ids = _diamond(vault, tx)
    store = vault.object_store()
    for old in ids.values():
        assert is_ancestor(store, old, ids["merge"])
        assert is_ancestor(vault.repo(), old, old)
    assert not is_ancestor(store, ids["merge"], ids["root"])
    assert not is_ancestor(store, ids["left"], ids["right"])
    assert not is_ancestor(store, ids["right"], ids["left"])


def test_ancestry_holds_behind_a_commit_made_on_a_slow_clock(vault: Vault) -> None:
    with vault.store.write() as tx:
        ids = _diamond(vault, tx, skew=True)  # the root is "newer" than all that follows it
    repo = vault.repo()
    assert not can_fast_forward(
        repo, ObjectID(ids["root"]), ObjectID(ids["merge"])
    )  # why not dulwich's shortcut
    assert is_ancestor(repo, ids["root"], ids["merge"])


def test_ancestry_of_objects_received_but_not_landed(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    commit = vault._new_commit(vault.objects().get_commit(head).tree, [head], "Received.")
    received: dict[bytes, bytes] = {commit.id: bytes([Commit.type_num]) + commit.as_raw_string()}
    store = with_received(vault.object_store(), received)
    assert is_ancestor(store, head, commit.id) and not is_ancestor(store, commit.id, head)
    assert commit.id not in vault.object_store()
    assert vault.cache.get((vault.id, commit.id)) is None  # nothing not landed stays cached


def test_ancestry_through_a_parent_that_is_not_a_commit_is_broken_history(
    fresh_node: NodeFixture,
) -> None:
    vault = fresh_node.node.vaults.create("work")
    vault.write("a", b"secret")
    first = vault.resolve("HEAD~1")
    tree = vault.objects().get_commit(vault.resolve(None)).tree
    bad = _signed(vault, tree, [tree])
    _plant(fresh_node.node, vault, bad, head=bad.id)
    with pytest.raises(BrokenHistory, match="is a tree, not a commit"):
        is_ancestor(vault.object_store(), first, bad.id)


# --- what a peer lacks --------------------------------------------------------------------------


def _reachable(vault: Vault, head: bytes) -> set[bytes]:
    objects, out, todo = vault.objects(), set(), [head]
    while todo:
        sha = todo.pop()
        if sha in out:
            continue
        out.add(sha)
        obj = objects.get(sha)
        if isinstance(obj, Commit):
            todo += [obj.tree, *obj.parents]
        elif isinstance(obj, Tree):
            todo += [entry.sha for entry in obj.iteritems()]
    return out


def test_a_clone_lacks_everything_reachable_in_a_fixed_order(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    plan = list(missing_objects(vault.object_store(), head, []))
    assert {sha for sha, _ in plan} == _reachable(vault, head)
    assert plan[0] == (head, Commit.type_num)
    kinds = [kind for _, kind in plan[1:]]
    assert kinds == sorted(kinds)  # commits, trees, then blobs
    assert plan == list(missing_objects(vault.object_store(), head, [b"f" * 40, b"nope"]))


def test_a_pull_lacks_only_what_is_new(vault: Vault) -> None:
    old = vault.head()
    assert old is not None
    vault.write("db/password", b"hunter3")
    head = vault.head()
    assert head is not None
    plan = list(missing_objects(vault.object_store(), head, [old]))
    assert {sha for sha, _ in plan} == _reachable(vault, head) - _reachable(vault, old)
    new_blob = vault.ls("db/password")[0].blob
    assert (new_blob, Blob.type_num) in plan and len(plan) == 4  # commit, 2 trees, blob


def test_records_travel_as_type_and_raw_object_and_hash_to_their_ids(vault: Vault) -> None:
    vault.write("big", bytes(3 << 20))  # kept in parts, sent whole
    head = vault.head()
    assert head is not None
    store = vault.object_store()
    plan = list(missing_objects(store, head, []))
    records = list(missing_records(store, head, []))
    assert [object_id(r[0], memoryview(r)[1:]) for r in records] == [sha for sha, _ in plan]
    assert [r[0] for r in records] == [kind for _, kind in plan]


@pytest.mark.parametrize("plant", PLANTS, ids=lambda f: f.__name__.strip("_"))
def test_sending_a_broken_history_fails_naming_the_object(
    fresh_node: NodeFixture, plant: Planter
) -> None:
    node: Node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    bad, _, _ = plant(node, vault)
    head = vault.head()
    assert head is not None
    vault.cache._items.clear()
    expected: type[Exception] = NodeDamaged if plant is _missing_parent else BrokenHistory
    with pytest.raises(expected) as caught:
        list(missing_records(vault.object_store(), head, []))
    assert bad.decode() in str(caught.value)
    assert b"secret".decode() not in str(caught.value)


def _git_clone_plan(vault: Vault) -> list[bytes]:
    """What dulwich's upload-pack asks the repository for a clone (no haves)."""

    class NoHaves:
        def __init__(self) -> None:
            self.shallow: set[bytes] = set()

        def __next__(self) -> None:
            return None

        def ack(self, sha: bytes) -> None: ...

        def nak(self) -> None: ...

    wants: Callable[..., list[ObjectID]] = lambda refs, depth=None: [refs[BRANCH]]  # noqa: E731
    found = vault.repo().find_missing_objects(wants, NoHaves(), None)
    assert found is not None
    return [sha for sha, _ in found]


def test_the_git_server_sends_what_the_peer_protocol_sends(vault: Vault) -> None:
    head = vault.head()
    assert head is not None
    assert set(_git_clone_plan(vault)) == {
        s for s, _ in missing_objects(vault.object_store(), head, [])
    }


@pytest.mark.parametrize("plant", PLANTS[:5], ids=lambda f: f.__name__.strip("_"))
def test_the_git_server_refuses_a_broken_history_by_name(
    fresh_node: NodeFixture, plant: Planter
) -> None:
    node: Node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    bad, _, _ = plant(node, vault)
    with pytest.raises(BrokenHistory) as caught:
        _git_clone_plan(vault)
    assert bad.decode() in caught.value.message
