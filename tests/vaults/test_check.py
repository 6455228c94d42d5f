"""`node check` re-hashes every git object and follows every ref of every vault."""

from __future__ import annotations

import os

from polykey.vaults.objects import CHUNK_BYTES, chunk_key, objects_ns
from tests.conftest import NodeFixture


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
    assert damage[0].problem == "is missing"


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
