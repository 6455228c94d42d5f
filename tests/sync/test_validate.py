"""Hostile objects from a peer are refused before anything lands (sync.fetch.validate)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.crypto import sshsig
from polykey.crypto.signing import SigningKey
from polykey.sync.fetch import UpdateRefused, validate

OWNER = SigningKey(bytes(range(32)))
STRANGER = SigningKey(bytes(range(1, 33)))


def raw(obj: ShaFile) -> bytes:
    return bytes([obj.type_num]) + obj.as_raw_string()


def commit(
    tree: Tree, key: SigningKey | None = OWNER, parents: list[bytes] | None = None
) -> Commit:
    c = Commit()
    c.tree = tree.id
    c.parents = [ObjectID(p) for p in parents or []]
    c.author = c.committer = b"node <node>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = b"Add secret.\n"
    if key is not None:
        c.gpgsig = sshsig.sign(key, c.raw_without_sig(), "git").encode()
    return c


def tree_with(name: bytes, mode: int = 0o100644, data: bytes = b"secret") -> tuple[Tree, Blob]:
    blob = Blob.from_string(data)
    tree = Tree()
    tree.add(name, mode, blob.id)
    return tree, blob


def check(
    objects: list[ShaFile], head: Commit, known: Callable[[bytes], bool] | None = None
) -> None:
    validate([raw(o) for o in objects], head.id, known or (lambda _s: False), {OWNER.public})


def test_a_well_formed_signed_history_is_accepted() -> None:
    tree, blob = tree_with(b"password")
    c = commit(tree)
    check([blob, tree, c], c)


@pytest.mark.parametrize(
    "name", [b"..", b".", b".git", b".GIT", b"a\x00b", b"a\x01b", b".polykeyx", b"\xff\xfe"]
)
def test_forbidden_names_in_a_tree_are_refused(name: bytes) -> None:
    blob = Blob.from_string(b"x")
    tree = Tree()
    tree.add(name, 0o100644, blob.id)
    c = commit(tree)
    with pytest.raises(UpdateRefused):
        check([blob, tree, c], c)


@pytest.mark.parametrize("mode", [0o120000, 0o160000, 0o100755])
def test_links_submodules_and_executables_are_refused(mode: int) -> None:
    tree, blob = tree_with(b"link", mode)
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="link, submodule"):
        check([blob, tree, c], c)


def test_names_differing_only_by_case_are_refused() -> None:
    blob = Blob.from_string(b"x")
    tree = Tree()
    tree.add(b"Key", 0o100644, blob.id)
    tree.add(b"key", 0o100644, blob.id)
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="case"):
        check([blob, tree, c], c)


def test_an_unsigned_commit_is_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree, key=None)
    with pytest.raises(UpdateRefused, match="not signed"):
        check([blob, tree, c], c)


def test_a_commit_signed_by_another_node_is_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree, key=STRANGER)
    with pytest.raises(UpdateRefused, match="allowed to write"):
        check([blob, tree, c], c)


def test_a_signature_over_other_content_is_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree)
    c.message = b"Changed after signing.\n"
    with pytest.raises(UpdateRefused):
        check([blob, tree, c], c)


def test_a_tree_naming_a_missing_object_is_refused() -> None:
    tree, _ = tree_with(b"a")
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="missing"):
        check([tree, c], c)


def test_a_deep_tree_is_refused() -> None:
    blob = Blob.from_string(b"x")
    objects: list[ShaFile] = [blob]
    inner = Tree()
    inner.add(b"leaf", 0o100644, blob.id)
    objects.append(inner)
    for _ in range(70):
        outer = Tree()
        outer.add(b"d", 0o040000, inner.id)
        objects.append(outer)
        inner = outer
    c = commit(inner)
    with pytest.raises(UpdateRefused, match="deep"):
        check([*objects, c], c)


def test_tag_objects_and_unknown_types_are_refused() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="type"):
        validate([raw(blob), raw(tree), raw(c), b"\x04tag"], c.id, lambda _s: False, {OWNER.public})


def test_a_head_that_is_not_a_commit_is_refused() -> None:
    tree, blob = tree_with(b"a")
    with pytest.raises(UpdateRefused):
        validate([raw(blob), raw(tree)], tree.id, lambda _s: False, {OWNER.public})


def test_object_ids_are_computed_locally_so_a_wrong_name_cannot_enter() -> None:
    tree, blob = tree_with(b"a")
    c = commit(tree)
    accepted = validate([raw(blob), raw(tree), raw(c)], c.id, lambda _s: False, {OWNER.public})
    assert set(accepted) == {blob.id, tree.id, c.id}
    assert accepted[blob.id][1:] == b"secret"


def test_parents_known_locally_are_enough() -> None:
    tree, _ = tree_with(b"a")
    first = commit(tree)
    tree2, blob2 = tree_with(b"a", data=b"new")
    second = commit(tree2, parents=[first.id])
    check([blob2, tree2, second], second, known=lambda sha: sha == first.id)
