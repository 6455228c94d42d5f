"""Merging two histories of one vault (vaults/merge.py): every rule, from both sides.

Two histories are made in one real node file: commits on a base, the head set back to the base,
other commits; then each head is merged into the other, and the two results must hold the same
tree (a merge gives the same result whichever node makes it).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from polykey.node import Node
from polykey.vaults.merge import copy_name, is_copy
from polykey.vaults.vault import BRANCH, MergeOutcome, Vault
from tests.conftest import NodeFixture

Edit = Callable[[Vault], object]


def set_head(node: Node, vault: Vault, head: bytes) -> None:
    with node.store.write() as tx:
        tx.put(vault.refs, BRANCH, head)


def fork(node: Node, vault: Vault, ours: list[Edit], theirs: list[Edit]) -> tuple[bytes, bytes]:
    """Two heads made from the current one: ``ours`` edits, then ``theirs`` edits."""
    base = vault.head()
    assert base is not None
    for edit in ours:
        edit(vault)
    mine = vault.head()
    set_head(node, vault, base)
    for edit in theirs:
        edit(vault)
    yours = vault.head()
    assert mine is not None and yours is not None
    return mine, yours


def merge(node: Node, vault: Vault, ours: bytes, theirs: bytes) -> MergeOutcome:
    set_head(node, vault, ours)
    with node.store.write() as tx:
        return vault.merge(tx, theirs, "test")


def both_ways(
    node: Node, vault: Vault, a: bytes, b: bytes
) -> tuple[MergeOutcome, dict[str, bytes]]:
    """Merge b into a and a into b: the same tree either way; the secrets of it."""
    one = merge(node, vault, a, b)
    tree_one = vault.objects().get_commit(one.head).tree
    secrets_one = contents(vault)
    two = merge(node, vault, b, a)
    tree_two = vault.objects().get_commit(two.head).tree
    assert tree_one == tree_two
    assert {(c.path, c.copy) for c in one.conflicts} == {(c.path, c.copy) for c in two.conflicts}
    assert contents(vault) == secrets_one
    return one, secrets_one


def contents(vault: Vault) -> dict[str, bytes]:
    return {e.path: vault.read(e.path) for e in vault.ls("", recursive=True) if e.kind == "secret"}


def new_vault(fresh_node: NodeFixture, **secrets: bytes) -> tuple[Node, Vault]:
    node = fresh_node.node
    vault = node.vaults.create("v")
    for path, value in secrets.items():
        vault.write(path.replace("__", "/"), value)
    return node, vault


def test_changes_to_different_secrets_both_land(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, a=b"1", b=b"2")
    a, b = fork(
        node,
        vault,
        [lambda v: v.write("a", b"A")],
        [lambda v: v.write("b", b"B"), lambda v: v.write("c/d", b"D")],
    )
    outcome, secrets = both_ways(node, vault, a, b)
    assert outcome.kind == "merged" and not outcome.conflicts
    assert secrets == {"a": b"A", "b": b"B", "c/d": b"D"}
    parents = vault.objects().get_commit(outcome.head).parents
    assert parents == [a, b]


def test_both_change_one_secret_the_newer_stays_the_other_is_kept_beside_it(
    fresh_node: NodeFixture,
) -> None:
    node, vault = new_vault(fresh_node, pw=b"old")
    base = vault.head()
    vault.write("pw", b"first")
    first = vault.head()
    time.sleep(1.05)  # commit times are whole seconds
    assert base is not None
    set_head(node, vault, base)
    vault.write("pw", b"second")
    second = vault.head()
    assert first is not None and second is not None
    outcome, secrets = both_ways(node, vault, first, second)
    assert secrets["pw"] == b"second"
    (conflict,) = outcome.conflicts
    assert conflict.path == "pw" and secrets[conflict.copy] == b"first"
    assert is_copy(conflict.copy.split("/")[-1])
    node_id = str(conflict.copied_by)
    assert conflict.copy.startswith("pw.conflict-" + node_id[1:9] + "-")
    message = vault.objects().get_commit(outcome.head).message.decode()
    assert f"Conflict: pw -> {conflict.copy}" in message


def test_the_same_change_on_both_sides_is_no_conflict(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, pw=b"old")
    a, b = fork(
        node,
        vault,
        [lambda v: v.write("pw", b"new")],
        [lambda v: v.write("pw", b"new"), lambda v: v.write("x", b"x")],
    )
    outcome, secrets = both_ways(node, vault, a, b)
    assert not outcome.conflicts and secrets == {"pw": b"new", "x": b"x"}


def test_a_change_against_a_deletion_the_change_wins(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, pw=b"old", keep=b"k")
    a, b = fork(node, vault, [lambda v: v.remove(["pw"])], [lambda v: v.write("pw", b"changed")])
    outcome, secrets = both_ways(node, vault, a, b)
    assert secrets == {"pw": b"changed", "keep": b"k"} and not outcome.conflicts


def test_a_folder_deleted_on_one_side_keeps_only_what_the_other_changed(
    fresh_node: NodeFixture,
) -> None:
    node, vault = new_vault(fresh_node, d__a=b"a", d__b=b"b", top=b"t")
    a, b = fork(
        node, vault, [lambda v: v.remove(["d"], recursive=True)], [lambda v: v.write("d/a", b"A2")]
    )
    _, secrets = both_ways(node, vault, a, b)
    assert secrets == {"d/a": b"A2", "top": b"t"}


def test_a_secret_against_a_folder_the_folder_stays_the_secret_is_copied(
    fresh_node: NodeFixture,
) -> None:
    node, vault = new_vault(fresh_node, other=b"o")
    a, b = fork(
        node, vault, [lambda v: v.write("x", b"secret")], [lambda v: v.write("x/y", b"inside")]
    )
    outcome, secrets = both_ways(node, vault, a, b)
    (conflict,) = outcome.conflicts
    assert conflict.kind == "file-folder" and conflict.path == "x"
    assert secrets["x/y"] == b"inside" and secrets[conflict.copy] == b"secret"


def test_names_that_differ_only_by_case_do_not_collide(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, other=b"o")
    a, b = fork(
        node, vault, [lambda v: v.write("Token", b"upper")], [lambda v: v.write("token", b"lower")]
    )
    outcome, secrets = both_ways(node, vault, a, b)
    (conflict,) = outcome.conflicts
    assert conflict.kind == "case"
    assert sorted(secrets.values()) == [b"lower", b"o", b"upper"]
    folded = [p.casefold() for p in secrets]
    assert len(folded) == len(set(folded))


def test_conflicts_deep_in_folders_are_settled_there(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, a__b__c=b"0", a__b__d=b"0")
    a, b = fork(
        node,
        vault,
        [lambda v: v.write("a/b/c", b"ours"), lambda v: v.write("a/b/d", b"D")],
        [lambda v: v.write("a/b/c", b"theirs"), lambda v: v.write("a/e", b"E")],
    )
    outcome, secrets = both_ways(node, vault, a, b)
    (conflict,) = outcome.conflicts
    assert conflict.path == "a/b/c" and conflict.copy.startswith("a/b/c.conflict-")
    assert {secrets["a/b/c"], secrets[conflict.copy]} == {b"ours", b"theirs"}
    assert secrets["a/b/d"] == b"D" and secrets["a/e"] == b"E"


def test_tags_merge_tag_by_tag(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, s=b"1", t=b"2")
    vault.set_tags("s", ["keep", "drop"], [])
    a, b = fork(
        node,
        vault,
        [lambda v: v.set_tags("s", ["ours"], ["drop"])],
        [lambda v: v.set_tags("s", ["theirs"], []), lambda v: v.set_tags("t", ["new"], [])],
    )
    outcome = merge(node, vault, a, b)
    assert vault.tags() == {"s": ["keep", "ours", "theirs"], "t": ["new"]}
    other = merge(node, vault, b, a)
    assert (
        vault.objects().get_commit(other.head).tree == vault.objects().get_commit(outcome.head).tree
    )


def test_up_to_date_and_fast_forward(fresh_node: NodeFixture) -> None:
    node, vault = new_vault(fresh_node, s=b"1")
    old = vault.head()
    vault.write("s", b"2")
    new = vault.head()
    assert old is not None and new is not None
    assert merge(node, vault, new, old).kind == "up-to-date"
    ff = merge(node, vault, old, new)
    assert (ff.kind, ff.head, vault.head()) == ("fast-forward", new, new)


def test_twin_merges_give_way_to_the_smaller_id_and_make_no_new_commit(
    fresh_node: NodeFixture,
) -> None:
    """Two nodes merging the same pair at once make two merges with one tree: each gives way
    to the same one, so merging them again makes nothing new (no merge ping-pong)."""
    node, vault = new_vault(fresh_node, s=b"1")
    a, b = fork(node, vault, [lambda v: v.write("a", b"A")], [lambda v: v.write("b", b"B")])
    m1 = merge(node, vault, a, b).head
    time.sleep(1.05)
    m2 = merge(node, vault, b, a).head  # same pair, same tree, another commit
    assert m1 != m2
    one, two = merge(node, vault, m1, m2), merge(node, vault, m2, m1)
    assert one.head == two.head == min(m1, m2)
    assert {one.kind, two.kind} == {"fast-forward", "up-to-date"}


def test_copy_names_fit_a_path_component() -> None:
    name = copy_name("n" * 250, "v" + "a" * 52, 0)
    assert len(name.encode()) <= 255 and name.endswith("-19700101T000000Z")
    assert is_copy(name) and not is_copy("plain") and not is_copy("x.conflict-short")
