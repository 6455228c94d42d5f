"""The vaults of a node: unique names, stable ids, tags, and removal that leaves nothing behind."""

from __future__ import annotations

import contextlib
import re
import sqlite3
from pathlib import Path

import pytest

from polykey.node import Node
from polykey.vaults.errors import VaultExists, VaultNotFound
from polykey.vaults.objects import objects_ns, refs_ns
from polykey.vaults.paths import InvalidVaultName
from polykey.vaults.registry import NAMES, REGISTRY
from tests.conftest import NodeFixture
from tests.support import PASSWORD

VAULT_ID = re.compile(r"v[0-9a-v]{26}")


def rows(path: Path) -> tuple[int, int]:
    """(records, manifests) in the SQLite file: what a removal must bring back."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (records,) = conn.execute("SELECT count(*) FROM record").fetchone()
        (manifests,) = conn.execute("SELECT count(*) FROM manifest").fetchone()
    return int(records), int(manifests)


def test_a_new_vault_has_a_random_id_and_is_listed_by_name(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    a = node.vaults.create("alpha")
    b = node.vaults.create("beta")
    assert VAULT_ID.fullmatch(a.id) and VAULT_ID.fullmatch(b.id)
    assert a.id != b.id
    assert [(i.name, i.id) for i in node.vaults.all()] == [("alpha", a.id), ("beta", b.id)]
    assert node.vaults.count() == 2
    assert node.info().vault_count == 2


def test_the_same_name_twice_is_vault_exists_and_changes_nothing(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    first = node.vaults.create("work")
    first.write("s", b"1")
    with pytest.raises(VaultExists, match="work") as caught:
        node.vaults.create("work")
    assert caught.value.exit_code == 32
    assert [i.id for i in node.vaults.all()] == [first.id]
    assert node.vaults.open("work").read("s") == b"1"


def test_vault_names_are_case_sensitive_but_exact_names_unique(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    node.vaults.create("Work")
    node.vaults.create("work")
    assert [i.name for i in node.vaults.all()] == ["Work", "work"]


@pytest.mark.parametrize("name", ["", "a b", "../x", ".hidden", "x/y", "x" * 129])
def test_an_invalid_vault_name_is_refused_on_create_and_rename(
    fresh_node: NodeFixture, name: str
) -> None:
    node = fresh_node.node
    node.vaults.create("ok")
    with pytest.raises(InvalidVaultName):
        node.vaults.create(name)
    with pytest.raises(InvalidVaultName):
        node.vaults.rename("ok", name)
    assert [i.name for i in node.vaults.all()] == ["ok"]


def test_a_vaults_id_and_history_survive_a_rename(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    vault = node.vaults.create("old", ["t"])
    vault.write("s", b"secret")
    head = vault.head()
    node.vaults.rename("old", "new")
    renamed = node.vaults.open("new")
    assert renamed.id == vault.id
    assert renamed.head() == head
    assert renamed.read("s") == b"secret"
    assert node.vaults.info("new").tags == ["t"]
    with pytest.raises(VaultNotFound):
        node.vaults.open("old")
    assert [i.name for i in node.vaults.all()] == ["new"]


def test_a_vault_id_survives_a_rename_across_reopening_the_node(fresh_node: NodeFixture) -> None:
    vault_id = fresh_node.node.vaults.create("a").id
    fresh_node.node.vaults.rename("a", "b")
    with Node.open(fresh_node.path, PASSWORD.encode(), allow_weak=True) as again:
        assert again.vaults.info("b").id == vault_id


def test_the_old_name_is_free_again_after_a_rename(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    first = node.vaults.create("name")
    node.vaults.rename("name", "moved")
    second = node.vaults.create("name")
    assert second.id != first.id
    assert second.ls("", recursive=True) == []


def test_renaming_onto_an_existing_name_or_from_a_missing_one_is_refused(
    fresh_node: NodeFixture,
) -> None:
    node = fresh_node.node
    a = node.vaults.create("a")
    b = node.vaults.create("b")
    with pytest.raises(VaultExists):
        node.vaults.rename("a", "b")
    with pytest.raises(VaultNotFound, match="ghost"):
        node.vaults.rename("ghost", "c")
    assert {i.name: i.id for i in node.vaults.all()} == {"a": a.id, "b": b.id}


def test_renaming_to_the_same_name_changes_nothing(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    vault = node.vaults.create("same")
    node.vaults.rename("same", "same")
    assert node.vaults.info("same").id == vault.id


def test_removing_a_vault_deletes_every_record_of_it(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    keep = node.vaults.create("keep")
    keep.write("k", b"kept")
    count = node.vaults.count()
    before = rows(fresh_node.path)
    vault = node.vaults.create("doomed", ["t"])
    vault.write("a/b", b"1")
    vault.write("big", b"x" * (3 * 1024 * 1024))  # parts of a large blob, too
    vault.set_tags("a/b", ["t"], [])
    vault.mkdir("d")
    assert node.store.keys(objects_ns(vault.id))
    removed = node.vaults.remove("doomed")
    assert removed == vault.id
    assert node.store.keys(objects_ns(vault.id)) == []
    assert node.store.keys(refs_ns(vault.id)) == []
    assert node.store.get(NAMES, b"doomed") is None
    assert node.store.get(REGISTRY, vault.id.encode()) is None
    assert node.vaults.count() == count
    assert rows(fresh_node.path) == before
    assert node.check() == []
    assert node.vaults.open("keep").read("k") == b"kept"


def test_a_removed_vault_is_gone_and_its_name_makes_a_new_empty_vault(
    fresh_node: NodeFixture,
) -> None:
    node = fresh_node.node
    old = node.vaults.create("v")
    old.write("s", b"1")
    node.vaults.remove("v")
    with pytest.raises(VaultNotFound):
        node.vaults.open("v")
    with pytest.raises(VaultNotFound):
        node.vaults.remove("v")
    new = node.vaults.create("v")
    assert new.id != old.id
    assert [c.message for c in new.log()] == ["Create vault v."]
    assert node.check() == []


def test_a_missing_vault_is_vault_not_found_with_exit_code_31(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    for action in (
        lambda: node.vaults.open("nope"),
        lambda: node.vaults.info("nope"),
        lambda: node.vaults.remove("nope"),
        lambda: node.vaults.retag("nope", ["t"], []),
    ):
        with pytest.raises(VaultNotFound, match="nope") as caught:
            action()
        assert caught.value.exit_code == 31


def test_vault_tags_are_added_removed_and_filter_the_list(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    node.vaults.create("a", ["prod", "team"])
    node.vaults.create("b", ["team"])
    node.vaults.create("c")
    assert node.vaults.info("a").tags == ["prod", "team"]
    assert [i.name for i in node.vaults.all("team")] == ["a", "b"]
    assert [i.name for i in node.vaults.all("prod")] == ["a"]
    assert node.vaults.all("none") == []
    assert node.vaults.retag("c", ["prod"], []).tags == ["prod"]
    assert node.vaults.retag("a", [], ["prod"]).tags == ["team"]
    assert [i.name for i in node.vaults.all("prod")] == ["c"]


def test_vault_tags_make_no_commit_in_the_vault(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    vault = node.vaults.create("a")
    head = vault.head()
    node.vaults.retag("a", ["x"], [])
    node.vaults.rename("a", "b")
    assert node.vaults.open("b").head() == head


def test_an_invalid_vault_tag_is_refused(fresh_node: NodeFixture) -> None:
    from polykey.vaults.errors import InvalidTag

    node = fresh_node.node
    with pytest.raises(InvalidTag):
        node.vaults.create("a", ["bad tag"])
    assert node.vaults.all() == []
    node.vaults.create("a")
    with pytest.raises(InvalidTag):
        node.vaults.retag("a", ["/"], [])
    assert node.vaults.info("a").tags == []
