"""Comparing two trees of a vault (dulwich's tree_changes): secrets added, changed, removed."""

from __future__ import annotations

import pytest

from polykey.vaults.errors import BrokenHistory
from polykey.vaults.history import Change, diff_trees
from polykey.vaults.vault import Vault
from tests.conftest import NodeFixture
from tests.vaults.test_check import _folder_is_a_blob


@pytest.fixture
def vault(fresh_node: NodeFixture) -> Vault:
    return fresh_node.node.vaults.create("work")


def _kinds(changes: list[Change]) -> list[tuple[str, str]]:
    return [(c.kind, c.path) for c in changes]


def test_a_secret_replaced_by_a_folder_is_its_delete_and_the_folders_adds(vault: Vault) -> None:
    vault.write("a", b"file")
    file_blob = vault.ls("a")[0].blob
    vault.remove(["a"])
    vault.write_many([("a/x", b"1"), ("a/y", b"2")], "Fill a.")
    forward = vault.diff("HEAD~2")
    assert _kinds(forward) == [("delete", "a"), ("add", "a/x"), ("add", "a/y")]
    assert forward[0] == Change("delete", "a", file_blob, None)
    assert _kinds(vault.diff("HEAD", "HEAD~2")) == [
        ("add", "a"),
        ("delete", "a/x"),
        ("delete", "a/y"),
    ]


def test_reserved_entries_are_left_out_at_every_depth(vault: Vault) -> None:
    vault.write("d/s", b"1")
    vault.set_tags("d/s", ["t"], [])
    vault.mkdir("d/e/f", parents=True)
    assert vault.diff("HEAD~2") == []
    assert _kinds(vault.diff("HEAD~3")) == [("add", "d/s")]


def test_paths_are_given_after_a_prefix_and_equal_trees_differ_in_nothing(vault: Vault) -> None:
    vault.write("k", b"v")
    objects = vault.objects()
    tree = objects.get_commit(vault.resolve(None)).tree
    assert diff_trees(objects, None, tree, "in/") == [
        Change("add", "in/k", None, vault.ls("k")[0].blob)
    ]
    assert diff_trees(objects, tree, tree) == [] and diff_trees(objects, None, None) == []


def test_a_folder_naming_a_blob_is_broken_history(fresh_node: NodeFixture, vault: Vault) -> None:
    vault.write("a", b"secret")
    bad, _, _ = _folder_is_a_blob(fresh_node.node, vault)
    with pytest.raises(BrokenHistory) as caught:
        vault.diff("HEAD~1")
    assert bad.decode() in caught.value.message and "secret" not in caught.value.message
