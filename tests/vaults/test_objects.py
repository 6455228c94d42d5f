"""Git object ids, computed in one place: known answers, parts, and what is refused."""

from __future__ import annotations

import os

import pytest
from dulwich.objects import Blob, Tree

from polykey.vaults.objects import CHUNK_BYTES, object_id
from polykey.vaults.vault import Vault
from tests.conftest import NodeFixture


@pytest.mark.parametrize(
    ("type_num", "body", "expected"),
    [
        (3, b"", b"e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"),  # git hash-object /dev/null
        (3, b"hello\n", b"ce013625030ba8dba906f756967f9e9ca394464a"),
        (2, b"", b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"),  # the empty tree
    ],
)
def test_object_ids_are_gits(type_num: int, body: bytes, expected: bytes) -> None:
    assert object_id(type_num, body) == expected
    assert object_id(type_num, memoryview(body)) == expected


def test_a_body_in_parts_hashes_as_the_whole() -> None:
    body = os.urandom(5000)
    parts: list[bytes | memoryview] = [body[:1], body[1:4096], memoryview(body)[4096:]]
    assert object_id(3, iter(parts), len(body)) == object_id(3, body) == Blob.from_string(body).id
    assert object_id(2, Tree().as_raw_string()) == Tree().id


def test_sizes_that_do_not_add_up_and_unknown_types_are_refused() -> None:
    with pytest.raises(ValueError, match="add up"):
        object_id(3, [b"ab", b"c"], 4)
    with pytest.raises(ValueError, match="needs its size"):
        object_id(3, [b"ab"])
    with pytest.raises(ValueError, match="no object type 7"):
        object_id(7, b"")


@pytest.mark.parametrize("size", [0, 40, CHUNK_BYTES, CHUNK_BYTES + 1, 2 * CHUNK_BYTES + 7])
def test_a_stored_blob_is_named_by_its_git_id(fresh_node: NodeFixture, size: int) -> None:
    vault: Vault = fresh_node.node.vaults.create("work")
    data = os.urandom(size)
    with vault.store.write() as tx:
        sha = vault.objects(tx).add_blob(data)
    assert sha == Blob.from_string(data).id
    assert vault.objects().get_blob_data(sha) == data
