"""`node check` re-hashes every git object and follows every ref of every vault."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from dulwich.objects import Blob, Commit, ObjectID, Tree

from polykey.errors import NodeDamaged
from polykey.node import Node
from polykey.vaults.errors import BrokenHistory, VaultError
from polykey.vaults.objects import CHUNK_BYTES, chunk_key, encode, objects_ns, refs_ns
from polykey.vaults.vault import BRANCH, Vault
from tests.conftest import NodeFixture
from tests.support import PASSWORD, pk_env, run_pk


def test_a_whole_node_with_vaults_checks_clean(fresh_node: NodeFixture) -> None:
    vault = fresh_node.node.vaults.create("work")
    vault.write("a/b", b"secret")
    vault.write("big", os.urandom(CHUNK_BYTES * 2 + 5))
    vault.set_tags("a/b", ["t"], [])
    assert fresh_node.node.check() == []


def test_a_missing_blob_is_named_with_its_vault(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    blob = vault.ls("a")[0].blob
    assert blob is not None
    with node.store.write() as tx:
        tx.delete(objects_ns(vault.id), bytes.fromhex(blob.decode()))
    damage = node.check()
    assert [d.place for d in damage] == [f"vault work: blob {blob.decode()}"]
    assert damage[0].problem.startswith("is missing")


def test_an_object_whose_content_does_not_hash_to_its_id_is_damage(
    fresh_node: NodeFixture,
) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    bogus = bytes(range(20))
    with node.store.write() as tx:
        tx.put(objects_ns(vault.id), bogus, b"\x03not the content of that id")
    damage = node.check()
    assert [(d.place, d.problem) for d in damage] == [
        (f"vault work: object {bogus.hex()}", "does not hash to its id")
    ]


def test_a_missing_part_of_a_large_blob_is_damage(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("big", os.urandom(CHUNK_BYTES * 3))
    blob = vault.ls("big")[0].blob
    assert blob is not None
    with node.store.write() as tx:
        tx.delete(objects_ns(vault.id), chunk_key(bytes.fromhex(blob.decode()), 1))
    damage = node.check()
    assert any(d.problem == "is missing part 1" for d in damage), damage


# --- history: every object present and of the type its place says ---------------------------
# A peer could push objects of the wrong type before receiving checked them; a vault holding
# such a history must be reported by name (never a crash), and read with a clear error.


def _plant(
    node: Node, vault: Vault, *objects: Blob | Tree | Commit, head: bytes | None = None
) -> None:
    """Put objects straight into the vault's records (as an unchecked push once could)."""
    with node.store.write() as tx:
        for obj in objects:
            tx.put(objects_ns(vault.id), bytes.fromhex(obj.id.decode()), encode(obj))
        if head is not None:
            tx.put(refs_ns(vault.id), BRANCH, head)


def _signed(vault: Vault, tree: bytes, parents: list[bytes]) -> Commit:
    return vault._new_commit(tree, parents, "Planted.")


def _tree(name: bytes, mode: int, sha: bytes) -> Tree:
    tree = Tree()
    tree.add(name, mode, ObjectID(sha))
    return tree


Planter = Callable[[Node, Vault], tuple[bytes, str, str]]  # -> (bad id, its place, problem)


def _commit_tree_is_a_blob(node: Node, vault: Vault) -> tuple[bytes, str, str]:
    blob = vault.ls("a")[0].blob
    assert blob is not None
    c = _signed(vault, blob, [vault.resolve(None)])
    _plant(node, vault, c, head=c.id)
    return blob, "tree", f"is a blob, but commit {c.id.decode()} names it as a tree"


def _parent_is_a_tree(node: Node, vault: Vault) -> tuple[bytes, str, str]:
    head = vault.resolve(None)
    tree = vault.objects().get_commit(head).tree
    c = _signed(vault, tree, [tree])
    _plant(node, vault, c, head=c.id)
    return tree, "commit", f"is a tree, but commit {c.id.decode()} names it as a commit"


def _parent_is_a_blob(node: Node, vault: Vault) -> tuple[bytes, str, str]:
    head = vault.resolve(None)
    blob = vault.ls("a")[0].blob
    assert blob is not None
    c = _signed(vault, vault.objects().get_commit(head).tree, [head, blob])
    _plant(node, vault, c, head=c.id)
    return blob, "commit", f"is a blob, but commit {c.id.decode()} names it as a commit"


def _file_is_a_tree(node: Node, vault: Vault) -> tuple[bytes, str, str]:
    head = vault.resolve(None)
    inner = vault.objects().get_commit(head).tree
    root = _tree(b"file", 0o100644, inner)
    c = _signed(vault, root.id, [head])
    _plant(node, vault, root, c, head=c.id)
    return inner, "blob", f"is a tree, but tree {root.id.decode()} names it as a blob"


def _folder_is_a_blob(node: Node, vault: Vault) -> tuple[bytes, str, str]:
    head = vault.resolve(None)
    blob = vault.ls("a")[0].blob
    assert blob is not None
    root = _tree(b"dir", 0o040000, blob)
    c = _signed(vault, root.id, [head])
    _plant(node, vault, root, c, head=c.id)
    return blob, "tree", f"is a blob, but tree {root.id.decode()} names it as a tree"


def _missing_parent(node: Node, vault: Vault) -> tuple[bytes, str, str]:
    ghost = b"1" * 40
    c = _signed(vault, vault.objects().get_commit(vault.resolve(None)).tree, [ghost])
    _plant(node, vault, c, head=c.id)
    return ghost, "commit", f"is missing (named by commit {c.id.decode()})"


PLANTS = [
    _commit_tree_is_a_blob,
    _parent_is_a_tree,
    _parent_is_a_blob,
    _file_is_a_tree,
    _folder_is_a_blob,
    _missing_parent,
]


@pytest.mark.parametrize("plant", PLANTS, ids=lambda f: f.__name__.strip("_"))
def test_a_history_with_an_object_of_the_wrong_type_or_missing_is_reported_by_name(
    fresh_node: NodeFixture, plant: Planter
) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    bad, kind, problem = plant(node, vault)
    damage = node.check()
    assert [(d.place, d.problem) for d in damage] == [
        (f"vault work: {kind} {bad.decode()}", problem)
    ]


def test_an_object_named_as_a_blob_and_as_a_tree_is_reported_where_it_is_a_tree(
    fresh_node: NodeFixture,
) -> None:
    """Checking an object once per id is not enough: it is right in one place, wrong in the
    other."""
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    blob = vault.ls("a")[0].blob
    assert blob is not None
    head = vault.resolve(None)
    root = Tree()
    root.add(b"a", 0o100644, ObjectID(blob))
    root.add(b"dir", 0o040000, ObjectID(blob))
    c = _signed(vault, root.id, [head])
    _plant(node, vault, root, c, head=c.id)
    assert [(d.place, d.problem) for d in node.check()] == [
        (
            f"vault work: tree {blob.decode()}",
            f"is a blob, but tree {root.id.decode()} names it as a tree",
        )
    ]


def test_an_object_that_hashes_right_but_does_not_parse_is_reported(
    fresh_node: NodeFixture,
) -> None:
    import hashlib

    node = fresh_node.node
    vault = node.vaults.create("work")
    body = b"100644 name-without-an-id"
    sha = hashlib.sha1(b"tree %d\x00" % len(body) + body).digest()
    with node.store.write() as tx:
        tx.put(objects_ns(vault.id), sha, b"\x02" + body)
    assert [(d.place, d.problem) for d in node.check()] == [
        (f"vault work: object {sha.hex()}", "is malformed")
    ]


@pytest.mark.parametrize(
    "plant",
    [_parent_is_a_tree, _parent_is_a_blob, _commit_tree_is_a_blob],
    ids=lambda f: f.__name__.strip("_"),
)
def test_reading_a_history_of_the_wrong_type_is_a_clear_vault_error(
    fresh_node: NodeFixture, plant: Planter
) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    bad, _, _ = plant(node, vault)
    with pytest.raises(BrokenHistory) as caught:
        if plant is _commit_tree_is_a_blob:
            vault.ls()
        else:
            vault.log()
    assert not isinstance(caught.value, NodeDamaged)
    assert "work" in caught.value.message and bad.decode() in caught.value.message


def test_pk_vaults_log_of_a_broken_history_is_one_line_exit_30(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("a", b"secret")
    bad, _, _ = _parent_is_a_tree(node, vault)
    env = pk_env(fresh_node.path, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    result = run_pk("vaults", "log", "work", env=env)
    err = result.stderr.decode()
    assert result.returncode == VaultError.exit_code == 30, err
    assert "Traceback" not in err and "damaged" not in err
    assert err.startswith("pk: error: The vault's history names an object of the wrong type")
    assert bad.decode() in err and "work" in err
    checked = run_pk("node", "check", env=env)
    assert checked.returncode == 14 and b"Traceback" not in checked.stderr
    assert f"commit {bad.decode()}".encode() in checked.stderr
    # every record authenticates: the hint is not to restore the node file from a backup
    hint = checked.stderr.decode().splitlines()[-1]
    assert hint.startswith("pk: hint: Every record authenticates") and "backup" not in hint
    as_json = run_pk("node", "check", "--format", "json", env=env)
    assert b'"kind": "history"' in as_json.stdout or b'"kind":"history"' in as_json.stdout
