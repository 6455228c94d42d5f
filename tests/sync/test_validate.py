"""Hostile objects from a peer are refused before anything lands (sync.fetch.validate)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.crypto import sshsig
from polykey.crypto.signing import SigningKey
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.fetch import UpdateRefused, local_tree_stats, validate
from polykey.vaults.vault import Vault

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


# --- object types, and trees the vault already holds ---------------------------------------


def test_a_folder_entry_naming_a_blob_or_a_file_entry_naming_a_tree_is_refused() -> None:
    blob = Blob.from_string(b"x")
    inner, inner_blob = tree_with(b"k")
    for name, mode, target in ((b"dir", 0o040000, blob), (b"file", 0o100644, inner)):
        tree = Tree()
        tree.add(name, mode, target.id)
        c = commit(tree)
        with pytest.raises(UpdateRefused, match="another type"):
            check([blob, inner, inner_blob, tree, c], c)


@pytest.fixture
def held(tmp_path: Path) -> Iterator[tuple[Node, Vault]]:
    """A real node whose vault holds `big/` (1,000 secrets) and `deep/` (60 folders deep)."""
    node, _ = Node.bootstrap(tmp_path / "n.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        vault = node.vaults.create("v")
        items = [(f"big/{i:04d}", b"v") for i in range(1000)]
        items.append(("/".join(["deep"] + [f"d{i}" for i in range(60)]) + "/leaf", b"v"))
        vault.write_many(items, "Fill.")
        yield node, vault


def _held_tree(vault: Vault, name: bytes) -> ObjectID:
    objects = vault.objects()
    head = vault.head()
    assert head is not None
    root = objects.get_tree(objects.get_commit(head).tree)
    return ObjectID(next(i.sha for i in root.iteritems() if i.path == name))


def _check_held(node: Node, vault: Vault, objects: list[ShaFile], head: Commit) -> None:
    local = vault.objects()

    def known(sha: bytes) -> bool:
        return node.store.contains(local.ns, bytes.fromhex(sha.decode()))

    validate([raw(o) for o in objects], head.id, known, {OWNER.public}, local_tree_stats(local))


def test_new_trees_naming_a_large_held_tree_many_times_are_refused(
    held: tuple[Node, Vault],
) -> None:
    node, vault = held
    big = _held_tree(vault, b"big")  # 1,000 paths
    bomb = Tree()
    for i in range(1000):  # 1,000 x 1,000 paths, in a tree of a few KiB
        bomb.add(f"copy{i:04d}".encode(), 0o040000, big)
    c = commit(bomb)
    with pytest.raises(UpdateRefused, match="more than 1,000,000 paths"):
        _check_held(node, vault, [bomb, c], c)
    fine = Tree()
    for i in range(900):
        fine.add(f"copy{i:04d}".encode(), 0o040000, big)
    c = commit(fine)
    _check_held(node, vault, [fine, c], c)  # 901,800 paths: allowed


def test_new_folders_above_a_deep_held_tree_count_its_depth(held: tuple[Node, Vault]) -> None:
    node, vault = held
    tree = Tree()
    tree.add(b"deep", 0o040000, _held_tree(vault, b"deep"))  # 61 folders below `deep`
    chain: list[ShaFile] = []
    for level in range(5):
        chain.append(tree)
        parent = Tree()
        parent.add(f"up{level}".encode(), 0o040000, tree.id)
        tree = parent
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="nested too deep"):
        _check_held(node, vault, [*chain, tree, c], c)


def test_a_new_folder_naming_a_held_blob_is_refused(held: tuple[Node, Vault]) -> None:
    node, vault = held
    blob = Blob.from_string(b"v")  # held: every secret of `big/` is this blob
    tree = Tree()
    tree.add(b"dir", 0o040000, blob.id)
    c = commit(tree)
    with pytest.raises(UpdateRefused, match="named as a folder"):
        _check_held(node, vault, [tree, c], c)


def test_a_commit_naming_a_blob_as_its_tree_or_a_tree_as_its_parent_is_refused() -> None:
    tree, blob = tree_with(b"k")
    as_tree = commit(blob)  # type: ignore[arg-type]  # dulwich takes any object's id
    with pytest.raises(UpdateRefused, match="another type"):
        check([blob, as_tree], as_tree)
    as_parent = commit(tree, parents=[tree.id])
    with pytest.raises(UpdateRefused, match="another type"):
        check([blob, tree, as_parent], as_parent)
